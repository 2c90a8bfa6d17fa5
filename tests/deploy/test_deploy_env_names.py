"""The environment variable names that docker-compose.yml and deploy/k8s give each process are real
settings of that process (so a renamed field is caught here, not as a silently ignored variable in
production), and every setting without a default is given."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("users", "catalog", "orders", "gateway")
SERVICES = ("users", "catalog", "orders")

# Read by the official postgres image's entrypoint.
POSTGRES_IMAGE_NAMES = {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"}
# Bootstrap-only names: not settings of any service, each read by the script named here.
BOOTSTRAP_SCRIPTS = {
    "postgres": ROOT / "deploy/postgres/initdb/10-shop.sh",
    "pgbouncer": ROOT / "deploy/pgbouncer/docker-entrypoint.sh",
}


def settings_class(package: str) -> type[BaseSettings]:
    """The settings class defined in <package>.config (whatever it is called)."""
    module = importlib.import_module(f"{package}.config")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseSettings)
        and obj.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{package}.config defines one settings class, found {classes}"
    return classes[0]


def env_names(cls: type[BaseSettings]) -> dict[str, bool]:
    """Environment name of every field → whether the field is required."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    names = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names[(alias or f"{prefix}{name}").upper()] = field.is_required()
    return names


def _compose_env() -> dict[str, set[str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: set(s.get("environment", {})) for name, s in compose["services"].items()}


def _k8s_env() -> dict[str, set[str]]:
    """Container name → env names it gets (explicit env + keys of its envFrom ConfigMaps)."""
    docs = [
        doc
        for path in sorted((ROOT / "deploy/k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and path.name != "kustomization.yaml"
    ]
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    result: dict[str, set[str]] = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            interpolated = {
                ref
                for e in container.get("env", [])
                for ref in re.findall(r"\$\(([A-Z0-9_]+)\)", e.get("value", ""))
            }
            # A variable that only feeds $(...) in another value is plumbing, not a setting.
            names -= interpolated
            for ref in container.get("envFrom", []):
                names |= set(config_maps[ref["configMapRef"]["name"]])
            result[container["name"]] = names
    return result


COMPOSE_ENV = _compose_env()
K8S_ENV = _k8s_env()


@pytest.fixture(scope="module")
def settings() -> dict[str, dict[str, bool]]:
    return {package: env_names(settings_class(package)) for package in PACKAGES}


@pytest.mark.parametrize("source", ["compose", "k8s"])
@pytest.mark.parametrize("package", PACKAGES)
def test_every_variable_given_to_an_app_is_one_of_its_settings(
    settings: dict[str, dict[str, bool]], source: str, package: str
) -> None:
    given = (COMPOSE_ENV if source == "compose" else K8S_ENV)[package]
    assert given, f"{source} gives {package} its settings"
    assert sorted(given - set(settings[package])) == []


@pytest.mark.parametrize("source", ["compose", "k8s"])
@pytest.mark.parametrize("package", PACKAGES)
def test_every_required_setting_is_given(
    settings: dict[str, dict[str, bool]], source: str, package: str
) -> None:
    given = (COMPOSE_ENV if source == "compose" else K8S_ENV)[package]
    required = {name for name, is_required in settings[package].items() if is_required}
    assert sorted(required - given) == []


@pytest.mark.parametrize("source", ["compose", "k8s"])
@pytest.mark.parametrize("svc", SERVICES)
def test_migration_job_gets_only_the_migrations_url(
    settings: dict[str, dict[str, bool]], source: str, svc: str
) -> None:
    given = (COMPOSE_ENV if source == "compose" else K8S_ENV)[f"migrate-{svc}"]
    assert given == {"MIGRATIONS_DATABASE_URL"}
    assert "MIGRATIONS_DATABASE_URL" in settings[svc]


@pytest.mark.parametrize("service", sorted(BOOTSTRAP_SCRIPTS))
def test_bootstrap_variables_are_read_by_their_script(service: str) -> None:
    script = BOOTSTRAP_SCRIPTS[service].read_text()
    unread = sorted(
        name
        for name in COMPOSE_ENV[service] | K8S_ENV.get(service, set())
        if name not in POSTGRES_IMAGE_NAMES and not re.search(rf"\b{name}\b", script)
    )
    assert unread == []


def test_shared_variables_have_the_same_names_in_compose_and_k8s() -> None:
    for package in PACKAGES:
        assert sorted(COMPOSE_ENV[package] - K8S_ENV[package]) == [], package
    assert COMPOSE_ENV["pgbouncer"] == K8S_ENV["pgbouncer"]


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_env_example_secrets_are_refused_in_production() -> None:
    """Copying .env.example and only switching to production must not start a service."""
    example = _env_example()
    assert example["ENVIRONMENT"] == "dev"
    cls = settings_class("users")
    # model_validate: only these values, whatever this test process's own environment holds.
    given: dict[str, Any] = {
        "environment": "production",
        "database_url": "postgresql+psycopg2://users_svc:x@pgbouncer:6432/shop",
        "internal_api_token": example["INTERNAL_API_TOKEN"],
        "first_superuser_username": example["FIRST_SUPERUSER_USERNAME"],
        "first_superuser_email": example["FIRST_SUPERUSER_EMAIL"],
        "first_superuser_password": example["FIRST_SUPERUSER_PASSWORD"],
        "jwt_private_key_file": "/run/secrets/jwt_private_key",
    }
    with pytest.raises(ValueError, match="first_superuser_password, internal_api_token"):
        cls.model_validate(given)
    assert cls.model_validate(given | {"environment": "dev"}).model_dump()["environment"] == "dev"
