"""Optional profiling of the services during a scenario with py-spy (sampling, no code change).

    uv run --with py-spy python bench/run.py --profile order_gateway

Writes the collapsed stacks per process (flamegraph.pl / speedscope can read them) and a summary
of where the samples fall."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

OURS = frozenset({"shop_common", "users", "catalog", "orders", "gateway"})
INTERESTING = (
    "shop_common",
    "users",
    "catalog",
    "orders",
    "gateway",
    "sqlalchemy",
    "psycopg2",
    "pydantic",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "httpcore",
    "aiohttp",
    "jwt",
    "argon2",
    "anyio",
    "logging",
    "json",
)


def find_py_spy() -> str:
    path = shutil.which("py-spy") or str(Path(sys.prefix) / "bin" / "py-spy")
    if not Path(path).exists():
        raise RuntimeError(
            "py-spy is not installed: run with `uv run --with py-spy python bench/run.py ...`"
        )
    return path


def record(
    pids: dict[str, int], duration: float, directory: Path, key: str, gil: bool = False
) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    """gil=False: every thread that is not idle (wall time, I/O waits included);
    gil=True: only the thread holding the GIL (where the Python CPU goes)."""
    binary = find_py_spy()
    directory.mkdir(parents=True, exist_ok=True)
    started = []
    for name, pid in pids.items():
        out = directory / f"{key}-{name}{'-gil' if gil else ''}.collapsed.txt"
        process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(duration))),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                *(["--gil"] if gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append((name, out, process))
    return started


def _split(frame: str) -> tuple[str, str]:
    """("function (path)", top-level package) from py-spy's "function (pkg/mod.py:123)"."""
    function, _, location = frame.rpartition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for marker in ("site-packages", "src"):
        if marker in parts:
            parts = parts[parts.index(marker) + 1 :]
    package = parts[0].removesuffix(".py") if parts else path
    return f"{function} ({path})", package


def summarize(path: Path, top: int = 15) -> dict[str, object]:
    """Inclusive share of samples per package and per function of ours, and leaf (self) share."""
    packages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_split(f) for f in stack.split(";")]
        total += count
        leaves[frames[-1][0]] += count
        for package in {pkg for _, pkg in frames}:
            packages[package] += count
        for function in {fn for fn, pkg in frames if pkg in OURS}:
            functions[function] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return (
            [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)] if total else []
        )

    return {
        "samples": total,
        "packages_inclusive_percent": share(
            Counter({k: v for k, v in packages.items() if k in INTERESTING})
        ),
        "our_functions_inclusive_percent": share(functions),
        "leaf_self_percent": share(leaves),
    }


def finish(started: list[tuple[str, Path, subprocess.Popen[bytes]]]) -> dict[str, object]:
    summaries: dict[str, object] = {}
    for name, out, process in started:
        _, stderr = process.communicate(timeout=120)
        if process.returncode != 0 or not out.exists():
            summaries[name] = {"error": stderr.decode(errors="replace")[-500:]}
            continue
        summaries[name] = {"file": str(out), **summarize(out)}
    return summaries
