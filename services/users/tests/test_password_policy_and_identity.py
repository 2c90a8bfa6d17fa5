"""Password policy (NIST SP 800-63B: length, a common-password list, no context words) and identity
normalisation (NFKC + casefold, IDNA domains): the 422 names the rule that failed; a fullwidth or
differently cased copy of an existing name is the same account."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Account, AccountFactory

PROBLEM = "application/problem+json"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def body(password: str, name: str | None = None) -> dict[str, Any]:
    name = name or f"pol{uuid.uuid4().hex[:10]}"
    return {"username": name, "email": f"{name}.mail@example.com", "password": password}


def password_error(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    (error,) = [e for e in response.json()["errors"] if e["loc"][-1] == "password"]
    result: dict[str, Any] = error
    return result


class TestPasswordPolicy:
    @pytest.mark.parametrize(
        ("password", "rule"),
        [
            (" " * 8, "password_repetitive"),
            ("12345678", "password_repetitive"),  # a plain sequence
            ("aaaaaaaaaa", "password_repetitive"),
            ("abcdefghij", "password_repetitive"),
            ("98765432", "password_repetitive"),
            ("iloveyou", "password_common"),
            ("sunshine1", "password_common"),
            ("qwertyuiop", "password_common"),
            ("Password1", "password_common"),
            ("short", "string_too_short"),
        ],
    )
    def test_weak_passwords_are_422_naming_the_rule(
        self, client: TestClient, password: str, rule: str
    ) -> None:
        response = client.post("/users/", json=body(password))

        assert password_error(response)["type"] == rule

    def test_password_equal_to_the_username_is_refused(self, client: TestClient) -> None:
        name = f"pol{uuid.uuid4().hex[:10]}"

        response = client.post("/users/", json=body(name, name))

        assert password_error(response)["type"] == "password_contains_username"

    def test_password_containing_the_username_in_another_case_is_refused(
        self, client: TestClient
    ) -> None:
        name = f"pol{uuid.uuid4().hex[:10]}"

        response = client.post("/users/", json=body(f"My-{name.upper()}-2026", name))

        assert password_error(response)["type"] == "password_contains_username"

    def test_password_containing_the_email_local_part_is_refused(self, client: TestClient) -> None:
        local = f"mail{uuid.uuid4().hex[:10]}"
        data = {**body(f"x-{local.upper()}-x"), "email": f"{local}@example.com"}

        response = client.post("/users/", json=data)

        assert password_error(response)["type"] == "password_contains_email"

    @pytest.mark.parametrize(
        "password",
        [
            "correct horse battery staple",
            "Pässwörd mit Ümläuten ✓",
            "密码是一个很长的句子",
            "x" * 7 + "y" * 121,
        ],
    )
    def test_long_and_unicode_passwords_are_accepted_and_work(
        self, client: TestClient, password: str
    ) -> None:
        data = body(password)

        created = client.post("/users/", json=data)
        login = client.post(
            "/auth/token", data={"username": data["username"], "password": password}
        )

        assert created.status_code == 201, created.text
        assert login.status_code == 200

    def test_password_of_129_characters_is_422(self, client: TestClient) -> None:
        response = client.post("/users/", json=body("x" * 64 + "y" * 65))

        assert password_error(response)["type"] == "string_too_long"

    def test_a_fullwidth_password_is_the_same_password(self, client: TestClient) -> None:
        data = body(fullwidth("Tangerine-Kite-42"))
        assert client.post("/users/", json=data).status_code == 201

        login = client.post(
            "/auth/token", data={"username": data["username"], "password": "Tangerine-Kite-42"}
        )

        assert login.status_code == 200

    def test_changing_to_a_common_password_is_422(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        response = client.patch(
            "/users/me",
            json={"password": "iloveyou1", "current_password": account.password},
            headers=account.headers,
        )

        assert password_error(response)["type"] == "password_common"

    def test_admin_setting_the_username_as_password_is_422(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()

        response = client.patch(
            f"/users/{account.id}", json={"password": account.username}, headers=admin.headers
        )

        assert password_error(response)["type"] == "password_contains_username"

    def test_bulk_reports_the_index_of_the_weak_password(
        self, client: TestClient, admin: Account
    ) -> None:
        items = [body(f"pw-{uuid.uuid4()}"), body("12345678")]

        response = client.post("/users/bulk", json=items, headers=admin.headers)

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", 1, "password"]


class TestIdentityNormalisation:
    def test_fullwidth_copy_of_an_email_is_taken(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        local, _, domain = account.email.partition("@")
        name = f"pol{uuid.uuid4().hex[:10]}"

        response = client.post(
            "/users/",
            json={
                "username": name,
                "email": f"{fullwidth(local)}@{domain}",
                "password": f"pw-{uuid.uuid4()}",
            },
        )

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/email-taken"

    def test_email_with_an_uppercase_or_fullwidth_domain_is_taken(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        local, _, domain = account.email.partition("@")

        for email in (f"{local}@{domain.upper()}", f"{local.upper()}@{fullwidth(domain)}"):
            response = client.post(
                "/users/",
                json={
                    "username": f"pol{uuid.uuid4().hex[:10]}",
                    "email": email,
                    "password": f"pw-{uuid.uuid4()}",
                },
            )
            assert response.status_code == 409, email

    def test_fullwidth_copy_of_a_username_is_taken(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        response = client.post(
            "/users/",
            json={
                "username": fullwidth(account.username.upper()),
                "email": f"other{uuid.uuid4().hex[:8]}@example.com",
                "password": f"pw-{uuid.uuid4()}",
            },
        )

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/username-taken"

    def test_login_with_a_fullwidth_or_upper_case_name_finds_the_account(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        for login in (fullwidth(account.username), account.email.upper()):
            response = client.post(
                "/auth/token", data={"username": login, "password": account.password}
            )
            assert response.status_code == 200, login
