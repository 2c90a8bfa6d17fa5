"""The JSON log line: one object per line, the request id, extra fields, an ISO 8601 timestamp."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from shop_common.logs import JsonFormatter, _timestamp, reset_request_id, set_request_id


@pytest.mark.parametrize(
    "created", [0.5, 1764609925.0, 1764609925.123456, 1764609925.9994, 1798761599.999]
)
def test_timestamp_is_iso_8601_utc_with_milliseconds(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")

    assert _timestamp(created) == expected


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("shop.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_a_line_carries_the_request_id_the_message_and_extra_fields(lines: io.StringIO) -> None:
    token = set_request_id("req-1")
    try:
        logging.getLogger("shop.test-logs").info(
            "%s %s", "GET", "/x", extra={"status": 200, "route": "/x"}
        )
    finally:
        reset_request_id(token)

    entry = json.loads(lines.getvalue())
    assert entry["msg"] == "GET /x"
    assert entry["request_id"] == "req-1"
    assert entry["service"] == "svc"
    assert entry["level"] == "info"
    assert (entry["status"], entry["route"]) == (200, "/x")
    assert datetime.fromisoformat(entry["ts"]).tzinfo is not None
    assert "threadName" not in entry
    assert "pathname" not in entry
