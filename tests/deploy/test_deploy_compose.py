"""docker-compose.yml, checked without a Docker engine: what a real `up` can't show.

- the compose specification's JSON schema (check-jsonschema, locked in the dev group) and the
  Compose v2 CLI's own `config` (with .env.example, and refusing to start without the secrets);
- no secret value in the file itself, every variable it reads documented in .env.example.

What the stack does when it runs (services, health checks, start-up order, the one published port,
non-root users, migrations) is tested on a real engine in tests/containers (`make containers`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

SERVICES = {"users": 8001, "catalog": 8002, "orders": 8003}
APPS = {**SERVICES, "gateway": 8000}
EXPECTED = {
    "postgres",
    "pgbouncer",
    "redis",
    *APPS,
    *(f"migrate-{svc}" for svc in SERVICES),
}
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "PRIVATE_KEY")


def _load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    assert isinstance(deps, dict), "depends_on is written with conditions"
    return {name: spec["condition"] for name, spec in deps.items()}


def _env_example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def _interpolations() -> list[tuple[str, str]]:
    """(name, operator) of every ${...} in the compose file; `$$` escapes are not interpolations."""
    text = COMPOSE_FILE.read_text().replace("$$", "")
    return re.findall(r"\$\{([A-Z][A-Z0-9_]*)(:?[-?]?)", text)


def _env_example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


class TestSecrets:
    def test_no_secret_value_is_written_in_the_compose_file(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        literal = {
            f"{name}.{key}": value
            for name, service in services.items()
            for key, value in _environment(service).items()
            if any(word in key for word in SECRET_WORDS)
            and not key.endswith(("_FILE", "_TTL_SECONDS"))
            and not re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", value)
        }
        assert literal == {}

    def test_urls_carry_passwords_only_through_interpolation(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        bad = {
            f"{name}.{key}": value
            for name, service in services.items()
            for key, value in _environment(service).items()
            if key.endswith("_URL") and "@" in value and ":${" not in value
        }
        assert bad == {}

    def test_signing_key_is_a_compose_secret_read_from_a_file(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        assert compose["secrets"] == {
            "jwt_private_key": {"file": "./deploy/secrets/jwt_private_key.pem"}
        }
        assert services["users"]["secrets"] == ["jwt_private_key"]
        assert (
            _environment(services["users"])["JWT_PRIVATE_KEY_FILE"]
            == "/run/secrets/jwt_private_key"
        )
        private = ["deploy/secrets/jwt_private_key.pem", ".env"]
        ignored = subprocess.run(
            ["git", "check-ignore", *private], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert ignored.stdout.split() == private, "the key file and .env are git-ignored"

    def test_required_variables_fail_fast_and_are_documented_in_env_example(self) -> None:
        required = {name for name, op in _interpolations() if op == ":?"}
        assert required == {
            "POSTGRES_PASSWORD",
            "USERS_DB_PASSWORD",
            "CATALOG_DB_PASSWORD",
            "ORDERS_DB_PASSWORD",
            "INTERNAL_API_TOKEN",
            "FIRST_SUPERUSER_PASSWORD",
        }
        assert required <= set(_env_example_values())

    def test_every_variable_the_compose_file_reads_is_in_env_example(self) -> None:
        assert {name for name, _ in _interpolations()} - _env_example_names() == set()

    def test_env_example_passwords_are_url_safe(self) -> None:
        # They are spliced into postgresql:// URLs; token_urlsafe output is safe too.
        values = _env_example_values()
        unsafe = {
            k: v
            for k, v in values.items()
            if "PASSWORD" in k and not re.fullmatch(r"[A-Za-z0-9_.~-]+", v)
        }
        assert unsafe == {}


def test_compose_file_validates_against_the_compose_specification() -> None:
    # check-jsonschema is locked in the dev group (uv.lock), so it is on PATH under `uv run`.
    binary = shutil.which("check-jsonschema")
    assert binary is not None, "check-jsonschema missing: run `make setup`"
    command = [binary]
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_cli() -> list[str] | None:
    """Compose v2 (`docker compose`): .ci/run installs it before `make test`; no engine needed."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def test_compose_cli_accepts_the_file_with_env_example() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker compose v2 plugin is not installed (make containers installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [*cli, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_compose_cli_refuses_to_start_without_the_required_secrets(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker compose v2 plugin is not installed (make containers installs it)")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for name in ("POSTGRES_PASSWORD", "INTERNAL_API_TOKEN", "USERS_DB_PASSWORD"):
        env.pop(name, None)
    result = subprocess.run(
        [*cli, "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode != 0
    assert "in .env (see .env.example)" in result.stderr
