"""Two checkouts side by side in one run: CPU per request of the same scenarios, alternated.

    uv run python bench/ab.py ../other-checkout [--only users_me_gateway,order_gateway]
        [--rounds 6] [--duration 5] [--workers 2]

On a shared or virtual machine the CPU a request costs drifts by ±10 % from one `make bench` to
the next, more than most single changes save. This starts both stacks at once (each from its own
checkout, with its own virtualenv, database and PgBouncer, seeded through its gateway), then
alternates short wrk runs between them, scenario by scenario, swapping which side goes first each
round, so drift hits both alike. It prints CPU per request by process (from /proc, as `make
bench` counts it) for A (the other checkout) and B (this one), and B/A. The other checkout needs
bench/shopbench (any version since issue 16); `uv sync` it first.

Run with the same commit on both sides it measured B 1-4 % cheaper than A (docs/PERFORMANCE.md):
a B/A between 0.96 and 1 is no evidence either way."""

from __future__ import annotations

import argparse
import collections
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_KEYS = "users_me_gateway,order_gateway,product_direct"


def hold(output: Path, workers: int) -> None:
    """In a checkout (cwd): start its bench stack, seed it, write what the driver needs, and keep
    it up until stdin closes."""
    sys.path.insert(0, str(Path.cwd() / "bench"))
    from shopbench import scenarios
    from shopbench.environment import bench_environment
    from shopbench.seed import seed

    extra = {name: {"WEB_CONCURRENCY": str(workers)} for name in ("users", "catalog", "orders")}
    with bench_environment(5, False, extra, 0) as env:
        config = env.stack.config
        data = seed(env.url("gateway"), config.superuser.username, config.superuser.password, 50)
        plan = {s.key: (s.load, s.connections) for s in scenarios.build(env, data, None)}
        partial = output.with_suffix(".partial")
        with partial.open("wb") as file:
            pickle.dump({"plan": plan, "pids": env.pids(), "database": config.database}, file)
        partial.rename(output)  # whole, or not there
        sys.stdin.read()


def _start(checkout: Path, output: Path, workers: int) -> subprocess.Popen[bytes]:
    command = ["uv", "run", "--project", str(checkout), "python", str(Path(__file__).resolve())]
    return subprocess.Popen(
        [*command, "--hold", str(output), "--workers", str(workers)],
        cwd=checkout,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=(output.parent / f"{output.stem}.log").open("wb"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?", help="the checkout to compare with (A)")
    parser.add_argument("--only", default=DEFAULT_KEYS, help=f"scenario keys ({DEFAULT_KEYS})")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hold", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold is not None:
        hold(args.hold, args.workers)
        return 0
    if args.other is None:
        parser.error("name the other checkout")
    sys.path.insert(0, str(HERE))
    from shopbench import cpu
    from shopbench.wrk import find_wrk, run_wrk

    keys = args.only.split(",")
    wrk = find_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="shop-ab-"))
    checkouts = {"A": args.other.resolve(), "B": HERE.parent}
    processes = {s: _start(c, workdir / f"{s}.pkl", args.workers) for s, c in checkouts.items()}
    try:
        deadline = time.monotonic() + 300
        while not all((workdir / f"{s}.pkl").exists() for s in checkouts):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes.values()):
                print(f"a stack did not come up; logs in {workdir}", file=sys.stderr)
                return 1
            time.sleep(1)
        sides: dict[str, Any] = {  # our own children's files, in our private directory
            s: pickle.loads((workdir / f"{s}.pkl").read_bytes())  # noqa: S301
            for s in checkouts
        }
        for side in sides.values():  # warm-up, unmeasured
            for key in keys:
                load, connections = side["plan"][key]
                run_wrk(wrk, load, duration=2, connections=connections)
        used: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        answered: collections.Counter[tuple[str, str]] = collections.Counter()
        for round_ in range(args.rounds):
            for key in keys:
                for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                    side = sides[name]
                    load, connections = side["plan"][key]
                    before = cpu.snapshot(side["pids"], side["database"])
                    result = run_wrk(wrk, load, duration=args.duration, connections=connections)
                    used[(name, key)].update(
                        cpu.delta(before, cpu.snapshot(side["pids"], side["database"]))
                    )
                    answered[(name, key)] += result.requests
    finally:
        for process in processes.values():
            if process.stdin is not None:
                process.stdin.close()
        for process in processes.values():
            process.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"A = {checkouts['A']}, B = {checkouts['B']}; {args.rounds} alternated rounds of")
    print(f"{args.duration:g} s per scenario; ms of CPU per request (/proc, as make bench)\n")
    for key in keys:
        per = {
            name: {p: 1000 * s / answered[(name, key)] for p, s in used[(name, key)].items()}
            for name in checkouts
        }
        total = {name: sum(per[name].values()) for name in checkouts}
        print(
            f"{key}: total A {total['A']:.3f}  B {total['B']:.3f}  B/A {total['B'] / total['A']:.3f}"
        )
        for name in sorted(set(per["A"]) | set(per["B"])):
            a, b = per["A"].get(name, 0.0), per["B"].get(name, 0.0)
            if max(a, b) >= 0.005:
                print(f"  {name:<18} A {a:6.3f}  B {b:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
