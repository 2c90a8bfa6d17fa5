"""`make bench`: start the stack locally, seed it through the gateway, drive load with wrk, and
write bench/results/latest.json, latest.md and latency.png (targets: DESIGN §8).

    uv run python bench/run.py                 # full run, about 3-4 minutes
    uv run python bench/run.py --quick         # 1-1.5 minute smoke run
    uv run python bench/run.py --duration 30 --only product_direct,product_gateway
    uv run --with py-spy python bench/run.py --profile order_gateway

Needs PostgreSQL reachable at SHOP_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
PgBouncer and wrk (`apt-get install pgbouncer wrk`). Everything runs on loopback, bounded in time
and connections; the throwaway database shop_bench_<hex> is dropped at the end."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shopbench import pyspy, report, revocation, scenarios
from shopbench.environment import bench_environment
from shopbench.runner import SERVICES, Runner, scenario_json
from shopbench.seed import seed
from shopbench.wrk import WrkMissing, find_wrk, wrk_version

from shop_dev.pgbouncer import find_pgbouncer

RESULTS = Path(__file__).resolve().parent / "results"


def _say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s per scenario, ~1 min")
    parser.add_argument("--duration", type=float, help="seconds measured per scenario (15)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load before each (2)")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds for the compared scenarios (3; quick: 1)"
    )
    parser.add_argument("--connections", type=int, help="override every scenario's connections")
    parser.add_argument("--scarce-stock", type=int, help="units in the contention scenario (200)")
    parser.add_argument("--pool-size", type=int, default=5, help="QueuePool size compared (5)")
    parser.add_argument(
        "--pool-all",
        type=int,
        default=0,
        help="experiment: every service direct to PostgreSQL with a QueuePool of this size",
    )
    parser.add_argument("--only", help="comma-separated scenario keys to run (default: all)")
    parser.add_argument("--profile", default="", help="scenario keys to profile with py-spy")
    parser.add_argument(
        "--profile-gil", action="store_true", help="py-spy samples only the GIL holder (CPU view)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PROCESS:NAME=VALUE",
        help="extra environment for one process, e.g. orders:LOG_LEVEL=WARNING (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="WEB_CONCURRENCY of users, catalog and orders (the gateway keeps 1); 1 measures one "
        "process per service (docs/PERFORMANCE.md compares both)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 16:
        parser.error("--workers: 1 to 16")
    args.extra_env = {}
    workers = {"WEB_CONCURRENCY": str(args.workers)}
    for process in ("users", "catalog", "orders"):
        args.extra_env[process] = dict(workers)
    for item in args.set:
        process, _, assignment = item.partition(":")
        name, eq, value = assignment.partition("=")
        if process not in SERVICES or not name or not eq:
            parser.error(f"--set {item!r}: expected PROCESS:NAME=VALUE, PROCESS in {SERVICES}")
        args.extra_env.setdefault(process, {})[name] = value
    args.duration = args.duration or (3.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.scarce_stock = args.scarce_stock or (50 if args.quick else 200)
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    if args.connections is not None and not 1 <= args.connections <= 256:
        parser.error("--connections must be between 1 and 256")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wrk = find_wrk()
    except WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    if find_pgbouncer() is None:
        print(
            "PgBouncer is not installed (apt-get install pgbouncer): the benchmark measures "
            "the production path through it.",
            file=sys.stderr,
        )
        return 2
    wanted = set(args.only.split(",")) if args.only else None
    profiled = {key for key in args.profile.split(",") if key}
    unknown = (wanted or set()) - set(scenarios.KEYS) | profiled - set(scenarios.KEYS)
    if unknown:
        print(f"unknown scenario keys {sorted(unknown)}; known: {', '.join(scenarios.KEYS)}")
        return 2
    if profiled:
        pyspy.find_py_spy()
    started = time.monotonic()
    started_at = datetime.now(UTC)
    load_start = _loadavg()
    _say(f"starting the stack (load average {load_start})")
    with bench_environment(args.pool_size, args.keep_logs, args.extra_env, args.pool_all) as env:
        _say(f"stack up in {time.monotonic() - started:.1f} s; seeding through the gateway")
        config = env.stack.config
        data = seed(
            env.url("gateway"),
            config.superuser.username,
            config.superuser.password,
            args.scarce_stock,
        )
        plan = scenarios.build(env, data, args.connections)
        selected = [s for s in plan if wanted is None or s.key in wanted]
        runner = Runner(
            wrk,
            env,
            duration=args.duration,
            warmup=args.warmup,
            rounds=args.rounds,
            profiled=profiled,
            profile_gil=args.profile_gil,
            profile_dir=args.output / "profiles",
            say=_say,
        )
        measured = runner.run(selected)
        results = {key: scenario_json(m) for key, m in measured.items()}
        profiles = {key: m.profile for key, m in measured.items() if m.profile is not None}
        contention = None
        if "order_contention" in measured:
            contention = scenarios.contention_check(
                env, data, measured["order_contention"].merged()
            )
        _say("measuring the revocation check (micro-benchmark)")
        revocation_check = revocation.measure(config.redis_url or "redis://127.0.0.1:6379/0")
    compared = report.comparisons(results)
    document: dict[str, Any] = {
        "run": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_time_s": round(time.monotonic() - started, 1),
            "quick": args.quick,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.release()}, Python "
            f"{platform.python_version()} ({Path(sys.executable).resolve()})",
            "wrk": wrk_version(wrk),
            "wrk_threads": 1,
            "rounds": args.rounds,
            "queuepool_size": args.pool_size,
            "workers": args.workers,
            "extra_env": args.extra_env,
            "pool_all": args.pool_all,
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
        },
        "scenarios": results,
        "comparisons": compared,
        "contention": contention,
        "targets": report.targets(results, compared, contention),
        "revocation_check": revocation_check,
    }
    if profiles:
        document["profiles"] = profiles
    report.write(document, args.output)
    _say(
        f"wrote {args.output}/latest.json, latest.md, latency.png in {document['run']['wall_time_s']} s"
    )
    print((args.output / "latest.md").read_text())
    return 0 if contention is None or contention["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
