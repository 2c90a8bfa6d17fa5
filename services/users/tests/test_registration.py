"""POST /users/: registration, duplicates (also concurrent), and every kind of bad input."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from users.models import User

PROBLEM = "application/problem+json"


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def body(**fields: Any) -> dict[str, Any]:
    name = unique()
    return {"username": name, "email": f"{name}@example.com", "password": "correct horse"} | fields


def stored(db: Session, username: str) -> int:
    return db.scalar(select(func.count()).where(func.lower(User.username) == username.lower())) or 0


class TestRegister:
    def test_registration_returns_the_user_without_any_password(
        self, client: TestClient, db: Session
    ) -> None:
        data = body(full_name="  Ada Lovelace ", bio="Analyst")

        response = client.post("/users/", json=data)

        assert response.status_code == 201
        user = response.json()
        assert set(user) == {
            "id",
            "username",
            "email",
            "full_name",
            "bio",
            "is_active",
            "is_superuser",
            "created_at",
            "updated_at",
            "last_login_at",
        }
        assert (user["username"], user["email"], user["full_name"], user["bio"]) == (
            data["username"],
            data["email"],
            "Ada Lovelace",
            "Analyst",
        )
        assert (user["is_active"], user["is_superuser"], user["last_login_at"]) == (
            True,
            False,
            None,
        )
        assert "correct horse" not in response.text
        assert "argon2" not in response.text
        row = db.get_one(User, user["id"])
        assert row.hashed_password.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert row.created_at.tzinfo is not None

    def test_email_domain_is_normalised_and_local_part_kept(self, client: TestClient) -> None:
        name = unique()

        response = client.post("/users/", json=body(username=name, email=f"{name}@EXAMPLE.Com"))

        assert response.status_code == 201
        assert response.json()["email"] == f"{name}@example.com"

    @pytest.mark.parametrize("field", ["is_superuser", "is_active", "id", "hashed_password"])
    def test_privileged_or_unknown_fields_are_refused(
        self, client: TestClient, db: Session, field: str
    ) -> None:
        data = body() | {field: True if field.startswith("is_") else "x"}

        response = client.post("/users/", json=data)

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", field]
        assert stored(db, data["username"]) == 0


class TestDuplicates:
    def test_taken_username_in_another_case_is_409(self, client: TestClient, db: Session) -> None:
        first = body()
        assert client.post("/users/", json=first).status_code == 201

        again = client.post("/users/", json=body(username=first["username"].upper()))

        assert again.status_code == 409
        assert again.headers["content-type"] == PROBLEM
        assert again.json()["type"] == "/problems/username-taken"
        assert again.json()["field"] == "username"
        assert stored(db, first["username"]) == 1

    def test_taken_email_in_another_case_is_409(self, client: TestClient, db: Session) -> None:
        first = body()
        assert client.post("/users/", json=first).status_code == 201
        other = body(email=first["email"].upper())

        again = client.post("/users/", json=other)

        assert again.status_code == 409
        assert again.json()["type"] == "/problems/email-taken"
        assert stored(db, other["username"]) == 0

    def test_concurrent_identical_registrations_create_exactly_one(
        self, client: TestClient, db: Session
    ) -> None:
        data = body()
        barrier = threading.Barrier(4)

        def register(_: int) -> tuple[int, str]:
            barrier.wait()
            response = client.post("/users/", json=data)
            return response.status_code, response.json().get("type", "")

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(register, range(4)))

        assert sorted(status for status, _ in responses) == [201, 409, 409, 409]
        conflicts = [kind for status, kind in responses if status == 409]
        assert set(conflicts) <= {"/problems/username-taken", "/problems/email-taken"}
        assert stored(db, data["username"]) == 1


BAD_FIELDS: list[tuple[str, Any]] = [
    ("username", "ab"),
    ("username", "x" * 51),
    ("username", "has space"),
    ("username", "semi;colon"),
    ("username", "emoji\u00e9"),
    ("username", "at@sign"),
    ("username", None),
    ("username", 12345),
    ("email", "not-an-email"),
    ("email", "a@"),
    ("email", "x" * 250 + "@example.com"),
    ("email", "nul\x00@example.com"),
    ("password", "short7!"),
    ("password", "p" * 129),
    ("password", "nul\x00byte-password"),
    ("full_name", "n" * 201),
    ("full_name", "nul\x00name"),
    ("bio", "b" * 2001),
    ("bio", ["not", "a", "string"]),
]


class TestBadInput:
    @pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
    def test_bad_field_is_422_and_nothing_is_stored(
        self, client: TestClient, db: Session, field: str, value: Any
    ) -> None:
        data = body() | {field: value}

        response = client.post("/users/", json=data)

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "/problems/validation-error"
        assert problem["errors"][0]["loc"][:2] == ["body", field]
        name = data["username"] if isinstance(data["username"], str) else ""
        assert stored(db, name) == 0

    def test_short_password_is_not_echoed(self, client: TestClient) -> None:
        response = client.post("/users/", json=body(password="hunter2"))

        assert response.status_code == 422
        assert "hunter2" not in response.text

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            (b'{"username": "abc", ', "application/json"),
            (b'{"username": "\xff\xfe\xfa"}', "application/json"),
            (b"\xff\xfe\x00\x00garbage", "application/json"),
            (b"[]", "application/json"),
            (b'"a string"', "application/json"),
            (b"username=abc&password=x", "application/x-www-form-urlencoded"),
            (b"", "application/json"),
        ],
    )
    def test_malformed_bodies_are_422(
        self, client: TestClient, content: bytes, content_type: str
    ) -> None:
        response = client.post("/users/", content=content, headers={"content-type": content_type})

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM
