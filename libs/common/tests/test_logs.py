"""The JSON log line: one object per line, the request id, extra fields, an ISO 8601 timestamp."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from shop_common.logs import (
    JsonFormatter,
    _timestamp,
    configure_logging,
    log_access,
    reset_request_id,
    set_request_id,
)


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


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging as a service runs it, its JSON lines going to a buffer."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging("svc")
    try:
        yield stream
    finally:
        logging.getLogger().handlers.clear()


class _Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _access_line(stream: io.StringIO) -> dict[str, object]:
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert isinstance(line, dict)
    line.pop("ts")
    return line


def test_the_access_line_written_directly_is_the_line_logging_writes(
    configured: io.StringIO,
) -> None:
    token = set_request_id("req-9")
    try:
        log_access("GET", "/users/me", 200, 0.01234, "/users/me")  # the direct path
        direct = _access_line(configured)
        configured.seek(0)
        configured.truncate()
        listener = _Collecting()
        logging.getLogger().addHandler(listener)  # someone else listens: through logging
        log_access("GET", "/users/me", 200, 0.01234, "/users/me")
        logged = _access_line(configured)
    finally:
        reset_request_id(token)

    assert (
        direct
        == logged
        == {
            "level": "info",
            "service": "svc",
            "logger": "shop.access",
            "msg": "GET /users/me 200",
            "request_id": "req-9",
            "status": 200,
            "duration_ms": 12.34,
            "route": "/users/me",
        }
    )
    assert [record.getMessage() for record in listener.records] == ["GET /users/me 200"]


def test_an_access_logger_above_info_writes_nothing(configured: io.StringIO) -> None:
    access = logging.getLogger("shop.access")
    access.setLevel(logging.WARNING)
    try:
        log_access("GET", "/x", 200, 0.001, "/x")
    finally:
        access.setLevel(logging.NOTSET)

    assert configured.getvalue() == ""
