"""CPU time spent by each process of the stack during a scenario, from /proc (Linux).

CPU milliseconds per request barely depend on how busy the machine is (unlike throughput on a
shared 2-core box), and they say where the time goes: gateway, users, catalog, orders, PgBouncer,
or the PostgreSQL backends serving the bench database."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _postgres_backends(database: str) -> dict[int, float]:
    """Backends whose process title names the bench database ("postgres: role db ...")."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            seconds = _cpu_seconds(int(entry.name))
            if seconds is not None:
                found[int(entry.name)] = seconds
    return found


Snapshot = tuple[dict[str, float], dict[int, float]]


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def children_seconds() -> float:
    """CPU seconds of this process's finished children (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
    return parents


def _tree_seconds(pid: int, children: Mapping[int, list[int]]) -> float | None:
    """CPU seconds of a process and its descendants: a service started with WEB_CONCURRENCY > 1
    is a supervisor whose workers do the work."""
    own = _cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(_tree_seconds(child, children) or 0.0 for child in children.get(pid, ()))


def snapshot(pids: Mapping[str, int], database: str) -> Snapshot:
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    own = {
        name: seconds
        for name, pid in pids.items()
        if (seconds := _tree_seconds(pid, children)) is not None
    }
    return own, _postgres_backends(database)


def delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds used between two snapshots, by process; backends summed as `postgres`."""
    out = {
        name: seconds - before[0][name]
        for name, seconds in after[0].items()
        if name in before[0] and seconds > before[0][name]
    }
    backends = sum(s - before[1].get(pid, 0.0) for pid, s in after[1].items())
    if backends > 0:
        out["postgres"] = backends
    return out


def per_request_ms(seconds: Mapping[str, float], requests: int) -> dict[str, float]:
    """CPU ms per request by process (those that did measurable work), and the total."""
    if requests <= 0:
        return {}
    out = {name: round(s * 1000 / requests, 3) for name, s in seconds.items() if s > 0}
    out["total"] = round(sum(out.values()), 3)
    return out
