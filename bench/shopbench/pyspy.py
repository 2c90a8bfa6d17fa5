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
    pids: dict[str, int], duration: float, directory: Path, key: str
) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    binary = find_py_spy()
    directory.mkdir(parents=True, exist_ok=True)
    started = []
    for name, pid in pids.items():
        out = directory / f"{key}-{name}.collapsed.txt"
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append((name, out, process))
    return started


def _module(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"
    location = frame.rsplit("(", 1)[-1].rstrip(")")
    path = location.split(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0] if rest else path
    if "src" in parts:
        rest = parts[parts.index("src") + 1 :]
        return rest[0] if rest else path
    return Path(path).stem


def summarize(path: Path, top: int = 12) -> dict[str, object]:
    """Inclusive share per package and per function (from our packages), and self time of leaves."""
    packages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        leaves[leaf] += count
        for package in {_module(f) for f in frames}:
            packages[package] += count
        for frame in set(frames):
            if _module(frame) in {"shop_common", "users", "catalog", "orders", "gateway"}:
                functions[frame] += count

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
