"""docker-compose.yml, checked without a Docker engine: services, healthchecks, dependency
conditions, networks, the single published port, and no secret in the file itself.

The file is also validated against the compose specification's JSON schema (check-jsonschema,
locked in the dev group), and `docker compose config -q` (or v1 `docker-compose config -q`) runs when
installed."""

from __future__ import annotations

import os
import re
import shutil
import stat
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


class TestServices:
    def test_compose_defines_exactly_the_designed_services(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        assert set(services) == EXPECTED

    def test_every_long_running_service_has_a_healthcheck(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        long_running = EXPECTED - {f"migrate-{svc}" for svc in SERVICES}
        missing = sorted(
            name for name in long_running if "test" not in services[name].get("healthcheck", {})
        )
        assert missing == []

    @pytest.mark.parametrize(("name", "port"), sorted(APPS.items()))
    def test_app_healthcheck_uses_python_urllib_on_its_own_port(
        self, services: dict[str, dict[str, Any]], name: str, port: int
    ) -> None:
        test = services[name]["healthcheck"]["test"]
        path = "/health/live" if name == "gateway" else "/health/ready"
        assert test[:3] == ["CMD", "python", "-c"]
        assert "urllib.request.urlopen" in test[3]
        assert f"'http://127.0.0.1:{port}{path}'" in test[3]

    def test_pgbouncer_healthcheck_logs_in_through_pgbouncer(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        test = services["pgbouncer"]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert "psql -h 127.0.0.1 -p 6432 -U users_svc -d shop" in test[1]

    def test_postgres_is_pinned_and_initialised_from_deploy_postgres(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        postgres = services["postgres"]
        assert postgres["image"] == "postgres:15-alpine"
        assert "./deploy/postgres/initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
        assert "./deploy/postgres/roles.sql:/opt/shop/roles.sql:ro" in postgres["volumes"]
        assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
        assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
        assert postgres["healthcheck"]["test"][1].startswith("pg_isready ")

    def test_pgbouncer_runs_the_repository_ini_and_entry_point(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        bouncer = services["pgbouncer"]
        assert bouncer["image"] == "edoburu/pgbouncer:v1.25.2-p0"
        assert bouncer["entrypoint"] == ["/bin/sh", "/opt/shop/docker-entrypoint.sh"]
        assert set(bouncer["volumes"]) == {
            "./deploy/pgbouncer/pgbouncer.ini:/etc/pgbouncer/pgbouncer.ini:ro",
            "./deploy/pgbouncer/docker-entrypoint.sh:/opt/shop/docker-entrypoint.sh:ro",
        }

    def test_every_bind_mount_source_exists_in_the_repository(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        sources = [
            volume.split(":", 1)[0]
            for service in services.values()
            for volume in service.get("volumes", [])
            if volume.startswith("./")
        ]
        assert sources, "the compose file bind-mounts deploy/ files"
        assert [s for s in sources if not (ROOT / s).exists()] == []

    def test_postgres_init_script_is_executable(self) -> None:
        mode = (ROOT / "deploy/postgres/initdb/10-shop.sh").stat().st_mode
        assert mode & stat.S_IXUSR
        assert mode & stat.S_IROTH, "the container's postgres user must read it"


class TestDependencies:
    @pytest.mark.parametrize("svc", sorted(SERVICES))
    def test_app_waits_for_its_migration_job_to_complete(
        self, services: dict[str, dict[str, Any]], svc: str
    ) -> None:
        deps = _depends(services[svc])
        assert deps[f"migrate-{svc}"] == "service_completed_successfully"
        assert deps["pgbouncer"] == "service_healthy"

    def test_every_one_shot_job_is_adopted_so_up_wait_succeeds(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        # `docker compose up --wait` exits 1 when a one-shot container exits and no service
        # depends on it with service_completed_successfully (docker/compose#10596).
        adopted = {
            dep
            for service in services.values()
            for dep, condition in _depends(service).items()
            if condition == "service_completed_successfully"
        }
        jobs = {name for name, service in services.items() if service.get("restart") == "no"}
        assert jobs == {f"migrate-{svc}" for svc in SERVICES}
        assert adopted == jobs

    @pytest.mark.parametrize("svc", sorted(SERVICES))
    def test_migration_job_runs_alembic_directly_against_postgres(
        self, services: dict[str, dict[str, Any]], svc: str
    ) -> None:
        job = services[f"migrate-{svc}"]
        assert job["command"] == ["alembic", "-c", f"services/{svc}/alembic.ini", "upgrade", "head"]
        assert _depends(job) == {"postgres": "service_healthy"}
        assert _environment(job) == {
            "MIGRATIONS_DATABASE_URL": f"postgresql+psycopg2://{svc}_svc:${{{svc.upper()}_DB_PASSWORD}}"
            "@postgres:5432/shop"
        }

    @pytest.mark.parametrize("svc", sorted(SERVICES))
    def test_app_connects_through_pgbouncer_as_its_own_role(
        self, services: dict[str, dict[str, Any]], svc: str
    ) -> None:
        url = _environment(services[svc])["DATABASE_URL"]
        # No options/search_path in the URL: PgBouncer 1.18 rejects the startup parameter.
        assert (
            url
            == f"postgresql+psycopg2://{svc}_svc:${{{svc.upper()}_DB_PASSWORD}}@pgbouncer:6432/shop"
        )

    def test_services_find_each_other_by_name_on_the_designed_ports(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        jwks = "http://users:8001/.well-known/jwks.json"
        assert _environment(services["catalog"])["JWKS_URL"] == jwks
        assert _environment(services["orders"])["JWKS_URL"] == jwks
        assert _environment(services["orders"])["CATALOG_URL"] == "http://catalog:8002"
        assert _environment(services["orders"])["USERS_URL"] == "http://users:8001"
        gateway = _environment(services["gateway"])
        assert (gateway["USERS_URL"], gateway["CATALOG_URL"], gateway["ORDERS_URL"]) == (
            "http://users:8001",
            "http://catalog:8002",
            "http://orders:8003",
        )

    def test_the_dependency_graph_has_no_cycle_and_no_unknown_service(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            assert name in services, f"{path} depends on unknown service {name}"
            assert name not in path, f"dependency cycle {(*path, name)}"
            for dep in _depends(services[name]):
                visit(dep, (*path, name))
            if name not in order:
                order.append(name)

        for name in sorted(services):
            visit(name, ())
        assert order.index("gateway") == len(order) - 1


class TestNetworksAndPorts:
    def test_only_the_gateway_publishes_a_port(self, services: dict[str, dict[str, Any]]) -> None:
        published = {name: s["ports"] for name, s in services.items() if "ports" in s}
        assert published == {"gateway": ["${GATEWAY_PORT:-8000}:8000"]}

    def test_backend_is_internal_and_the_gateway_also_joins_edge(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        assert compose["networks"] == {"backend": {"internal": True}, "edge": {}}
        networks = {name: sorted(s["networks"]) for name, s in services.items()}
        assert networks.pop("gateway") == ["backend", "edge"]
        assert set(map(tuple, networks.values())) == {("backend",)}

    @pytest.mark.parametrize(("name", "port"), sorted(APPS.items()))
    def test_app_image_is_built_from_the_repository_root(
        self, services: dict[str, dict[str, Any]], name: str, port: int
    ) -> None:
        dockerfile = "gateway/Dockerfile" if name == "gateway" else f"services/{name}/Dockerfile"
        for service_name in (name, f"migrate-{name}"):
            if service_name not in services:
                continue
            build = services[service_name]["build"]
            assert build["context"] == "."
            assert build["dockerfile"] == dockerfile
            assert "args" not in build, "the Dockerfile's ARG defaults are the pinned base images"
            assert services[service_name]["image"] == f"shop/{name}:latest"


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
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_cli_accepts_the_file_with_env_example() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
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
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
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
