"""Settings that fail fast, the signing key's origin, and the first superuser at start-up
(idempotent, race-safe, never overwriting an existing account)."""

from __future__ import annotations

import ipaddress
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shop_common.db import make_engine, make_sessionmaker
from shop_common.keys import generate_private_key_pem, public_jwk
from shop_dev.testing import ShopDatabase
from users.auth.passwords import Passwords
from users.auth.tokens import load_signing_key
from users.cli import main
from users.config import UsersSettings
from users.main import create_app
from users.models import User
from users.superuser import create_first_superuser

if TYPE_CHECKING:
    from conftest import AccountFactory, SettingsFactory

REAL_TOKEN = "a-real-internal-token-0123456789"
BASE: dict[str, Any] = {
    "database_url": "postgresql+psycopg2://users_svc:pw@127.0.0.1:6432/shop",
    "internal_api_token": REAL_TOKEN,
}


def settings(**fields: Any) -> UsersSettings:
    return UsersSettings(**(BASE | fields))


class TestSettings:
    def test_a_signing_key_is_required_outside_dev(self) -> None:
        for environment in ("test", "production"):
            with pytest.raises(ValidationError, match="JWT_PRIVATE_KEY"):
                settings(environment=environment)

    def test_argon2_below_owasp_minimum_is_refused_in_production_only(self) -> None:
        key = generate_private_key_pem().decode()
        for weak in ({"argon2_memory_kib": 8192}, {"argon2_time_cost": 1}):
            with pytest.raises(ValidationError, match="OWASP"):
                settings(environment="production", jwt_private_key=key, **weak)
            assert settings(environment="test", jwt_private_key=key, **weak).is_dev is False

    def test_first_superuser_settings_come_together(self) -> None:
        with pytest.raises(ValidationError, match="together"):
            settings(environment="dev", first_superuser_username="root")

    def test_placeholder_superuser_password_and_key_are_refused_outside_dev(self) -> None:
        with pytest.raises(ValidationError) as error:
            settings(
                environment="production",
                jwt_private_key="changeme",
                first_superuser_username="root",
                first_superuser_email="root@example.com",
                first_superuser_password="changeme",
            )
        assert "first_superuser_password, jwt_private_key" in str(error.value)

    def test_environment_names_are_unprefixed(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        key_file = tmp_path / "key.pem"
        monkeypatch.setenv("DATABASE_URL", BASE["database_url"])
        monkeypatch.setenv("INTERNAL_API_TOKEN", REAL_TOKEN)
        monkeypatch.setenv("ENVIRONMENT", "test")
        monkeypatch.setenv("FIRST_SUPERUSER_USERNAME", "root")
        monkeypatch.setenv("FIRST_SUPERUSER_EMAIL", "root@example.com")
        monkeypatch.setenv("FIRST_SUPERUSER_PASSWORD", "a-long-enough-password")
        monkeypatch.setenv("JWT_PRIVATE_KEY_FILE", str(key_file))
        monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
        monkeypatch.setenv("LOGIN_RATE_LIMIT_PER_MINUTE", "60")

        loaded = UsersSettings()

        assert loaded.first_superuser_username == "root"
        assert loaded.first_superuser_password is not None
        assert loaded.first_superuser_password.get_secret_value() == "a-long-enough-password"
        assert loaded.jwt_private_key_file == key_file
        assert loaded.trusted_proxies == [
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("127.0.0.1/32"),
        ]
        assert loaded.login_rate_limit_per_minute == 60
        assert "a-long-enough-password" not in repr(loaded)

    @pytest.mark.parametrize("value", ["10.1.0.0/16,::1", '["10.1.0.0/16", "::1"]'])
    def test_trusted_proxies_accept_a_list_or_json(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("TRUSTED_PROXIES", value)

        loaded = settings(environment="dev")

        assert loaded.trusted_proxies == [
            ipaddress.ip_network("10.1.0.0/16"),
            ipaddress.ip_network("::1/128"),
        ]


class TestSigningKey:
    def test_dev_mode_generates_one_key_and_reuses_it(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        dev = settings(environment="dev")

        with ThreadPoolExecutor(4) as pool:
            keys = list(pool.map(lambda _: public_jwk(load_signing_key(dev)), range(4)))
        again = public_jwk(load_signing_key(dev))

        key_file = tmp_path / ".devstack" / "jwt-ed25519.pem"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert {k["kid"] for k in [*keys, again]} == {again["kid"]}
        assert list(key_file.parent.iterdir()) == [key_file]

    def test_configured_key_wins_and_is_published(self, tmp_path: Path) -> None:
        pem = generate_private_key_pem()
        key_file = tmp_path / "k.pem"
        key_file.write_bytes(pem)

        from_value = load_signing_key(settings(environment="test", jwt_private_key=pem.decode()))
        from_file = load_signing_key(settings(environment="test", jwt_private_key_file=key_file))

        assert public_jwk(from_value) == public_jwk(from_file)

    def test_a_non_ed25519_key_is_refused(self) -> None:
        ec_pem = (
            ec.generate_private_key(ec.SECP256R1())
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )

        with pytest.raises(ValueError, match="must be an Ed25519 private key"):
            load_signing_key(settings(environment="test", jwt_private_key=ec_pem))
        with pytest.raises(ValueError, match="Unable to load PEM file"):
            load_signing_key(settings(environment="test", jwt_private_key="-----BEGIN junk-----"))


def superusers_named(db: Session, username: str) -> list[tuple[str, bool]]:
    db.expire_all()
    return [
        (row.username, row.is_superuser)
        for row in db.scalars(select(User).where(func.lower(User.username) == username.lower()))
    ]


class TestFirstSuperuser:
    def test_start_up_creates_the_superuser_once(
        self, settings_factory: SettingsFactory, db: Session
    ) -> None:
        name = f"boot_{uuid.uuid4().hex[:10]}"
        boot = settings_factory(
            first_superuser_username=name,
            first_superuser_email=f"{name}@example.com",
            first_superuser_password="boot-password-123",
        )

        for _ in range(2):
            with TestClient(create_app(boot)) as client:
                response = client.post(
                    "/auth/token", data={"username": name, "password": "boot-password-123"}
                )
                assert response.status_code == 200

        assert superusers_named(db, name) == [(name, True)]

    def test_replicas_starting_together_create_one_superuser(
        self, settings_factory: SettingsFactory, db: Session
    ) -> None:
        name = f"race_{uuid.uuid4().hex[:10]}"
        race = settings_factory()
        engine = make_engine(race.database_url)
        factory = make_sessionmaker(engine)
        passwords = Passwords(memory_kib=19456, time_cost=2, parallelism=1)
        barrier = threading.Barrier(4)

        def start(_: int) -> None:
            barrier.wait()
            create_first_superuser(
                factory,
                passwords,
                username=name,
                email=f"{name}@example.com",
                password="race-password-123",
            )

        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(start, range(4)))
        finally:
            engine.dispose()

        assert superusers_named(db, name) == [(name, True)]

    def test_an_existing_account_of_that_name_is_left_alone(
        self,
        settings_factory: SettingsFactory,
        make_account: AccountFactory,
        db: Session,
    ) -> None:
        account = make_account()
        boot = settings_factory(
            first_superuser_username=account.username.upper(),
            first_superuser_email=f"other-{account.email}",
            first_superuser_password="takeover-attempt-1",
        )

        with TestClient(create_app(boot)) as client:
            takeover = client.post(
                "/auth/token", data={"username": account.username, "password": "takeover-attempt-1"}
            )
            original = client.post(
                "/auth/token", data={"username": account.username, "password": account.password}
            )

        assert (takeover.status_code, original.status_code) == (401, 200)
        assert superusers_named(db, account.username) == [(account.username, False)]


class TestCreateSuperuserCommand:
    def test_command_creates_an_admin_once(
        self,
        monkeypatch: pytest.MonkeyPatch,
        shop_db: ShopDatabase,
        db: Session,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        for key, value in shop_db.settings_kwargs("users").items():
            monkeypatch.setenv(key.upper(), str(value))
        monkeypatch.setenv("SUPERUSER_PASSWORD", "cli-superuser-password")
        name = f"cli_{uuid.uuid4().hex[:10]}"
        argv = ["create-superuser", "--username", name, "--email", f"{name}@example.com"]

        with pytest.raises(SystemExit) as first:
            main(argv)
        with pytest.raises(SystemExit) as second:
            main(argv)

        assert (first.value.code, second.value.code) == (0, 1)
        assert capsys.readouterr().out.splitlines() == [
            f"created superuser {name}",
            f"{name} or {name}@example.com already exists",
        ]
        assert superusers_named(db, name) == [(name, True)]

    def test_command_refuses_an_invalid_account(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("SUPERUSER_PASSWORD", "short")

        with pytest.raises(SystemExit) as exit_info:
            main(["create-superuser", "--username", "ok_name", "--email", "ok@example.com"])

        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (
            "invalid password: String should have at least 8 characters\n"
        )
