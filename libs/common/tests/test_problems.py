"""Every error leaves as RFC 9457 problem+json; internals never reach the client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import pytest
from fastapi import APIRouter, Query
from fastapi.testclient import TestClient
from pydantic import Field
from sqlalchemy import text

from shop_common.db import SessionDep
from shop_common.errors import Conflict, TooManyRequests
from shop_common.schemas import Input

ClientFactory = Callable[..., TestClient]
SCRATCH_SCHEMA = "common_scratch"


class NoteIn(Input):
    body: str = Field(min_length=1, max_length=50)
    n: int = 0


class NoteTaken(Conflict):
    title = "Note already exists"


router = APIRouter()


@router.post("/notes", status_code=201)
def create_note(note: NoteIn, session: SessionDep) -> dict[str, int]:
    new_id = session.execute(
        text(f"INSERT INTO {SCRATCH_SCHEMA}.notes (body, n) VALUES (:b, :n) RETURNING id"),
        {"b": note.body, "n": note.n},
    ).scalar_one()
    if note.body.startswith("conflict"):
        raise NoteTaken("this note is refused", body=note.body)
    return {"id": new_id}


@router.get("/boom")
def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2 at /srv/app.py line 3")


@router.get("/slow-down")
def slow_down() -> None:
    raise TooManyRequests("wait a bit", retry_after=7)


@router.get("/search")
def search(page_size: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, int]:
    return {"page_size": page_size}


def _count(client_db_url: str, body: str) -> int:
    from sqlalchemy import create_engine

    engine = create_engine(client_db_url)
    with engine.connect() as conn:
        n = conn.execute(
            text(f"SELECT count(*) FROM {SCRATCH_SCHEMA}.notes WHERE body = :b"),
            {"b": body},
        ).scalar_one()
    engine.dispose()
    return int(n)


def test_validation_error_is_422_problem_with_field_errors_and_no_input_echo(
    client_for: ClientFactory,
) -> None:
    client = client_for(router)

    response = client.post("/notes", json={"body": "", "n": "x", "password": "hunter2"})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["title"] == "Invalid request"
    assert problem["instance"] == "/notes"
    assert problem["request_id"] == response.headers["x-request-id"]
    locs = sorted(tuple(e["loc"]) for e in problem["errors"])
    assert locs == [("body", "body"), ("body", "n"), ("body", "password")]
    assert "hunter2" not in response.text


def test_nul_byte_in_a_string_is_422_not_500(client_for: ClientFactory) -> None:
    response = client_for(router).post("/notes", json={"body": "a\x00b"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "body"]


def test_unknown_route_is_404_problem_and_wrong_method_is_405(client_for: ClientFactory) -> None:
    client = client_for(router)

    missing = client.get("/nope")
    wrong_method = client.delete("/notes")

    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "Not Found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["status"] == 405


def test_unexpected_exception_is_500_without_internals(client_for: ClientFactory) -> None:
    response = client_for(router).get("/boom")

    assert response.status_code == 500
    assert response.json()["type"] == "/problems/internal-error"
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text


def test_500_and_its_log_line_carry_the_request_id(
    client_for: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = client_for(router, log_json=True)
    capsys.readouterr()

    response = client.get("/boom", headers={"X-Request-ID": "boom-trace-1"})

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "boom-trace-1"
    assert response.json()["request_id"] == "boom-trace-1"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    errors = [line for line in lines if line["level"] == "error"]
    assert errors, lines
    assert {line["request_id"] for line in errors} == {"boom-trace-1"}
    assert "hunter2" in errors[0]["exc"]  # the traceback is logged, never sent


def test_domain_error_rolls_back_the_request_transaction(
    client_for: ClientFactory, scratch_db: str
) -> None:
    body = "conflict-rollback-check"

    response = client_for(router).post("/notes", json={"body": body})

    assert response.status_code == 409
    assert response.json()["type"] == "/problems/note-taken"
    assert response.json()["body"] == body
    assert _count(scratch_db, body) == 0


def test_successful_request_is_committed_before_the_response(
    client_for: ClientFactory, scratch_db: str
) -> None:
    response = client_for(router).post("/notes", json={"body": "committed-note"})

    assert response.status_code == 201
    assert _count(scratch_db, "committed-note") == 1


def test_untranslated_constraint_violation_is_409_and_value_out_of_range_is_422(
    client_for: ClientFactory,
) -> None:
    client = client_for(router)
    assert client.post("/notes", json={"body": "dup-note"}).status_code == 201

    duplicate = client.post("/notes", json={"body": "dup-note"})
    too_big = client.post("/notes", json={"body": "check-note", "n": 2**40})

    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == "/problems/constraint-violation"
    assert "duplicate key" not in duplicate.text
    assert too_big.status_code in (409, 422)
    assert "psycopg2" not in too_big.text


def test_rate_limit_error_carries_retry_after(client_for: ClientFactory) -> None:
    response = client_for(router).get("/slow-down")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["retry_after"] == 7


def test_query_bounds_are_422(client_for: ClientFactory) -> None:
    response = client_for(router).get("/search", params={"page_size": 101})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "page_size"]
