"""Two checkouts side by side in one run: CPU per request of the same scenarios, alternated.

    uv run python bench/ab.py ../other-checkout [--only users_me_gateway,order_gateway]
        [--rounds 6] [--duration 5] [--workers 2]
    uv run python bench/ab.py --rev COMMIT [...]   # a commit of this repository, checked out for the run
    uv run python bench/ab.py --issue16            # issue 16's lines against the code it measured

On a shared or virtual machine the CPU a request costs drifts by ±10 % from one `make bench` to
the next, more than most single changes save. This starts both stacks at once (each from its own
checkout, with its own virtualenv, database and PgBouncer, seeded through its gateway), then
alternates short wrk runs between them, scenario by scenario, swapping which side goes first each
round, so drift hits both alike. It prints CPU per request by process (from /proc, as `make
bench` counts it) for A (the other checkout) and B (this one), and B/A, then each side's 2xx per
second and p99 (the median of its rounds). The other checkout needs bench/shopbench (any version
since 2026-11-26); `uv sync` it first, on the interpreter this checkout runs. `--rev` does both
itself: a temporary `git worktree` of the commit, synced on this interpreter, removed afterwards.
`--issue16` compares with the commit whose figures issue 16 quoted as "now" and judges each of
its lines as a ratio of the two sides (shopbench/issue16.py says why and how).

Run with the same commit on both sides it measured B 1-4 % cheaper than A (docs/PERFORMANCE.md):
a B/A between 0.96 and 1 is no evidence either way."""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopbench.issue16 import Side

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


class Tally:
    """One side's measurements of one scenario, summed over the rounds."""

    def __init__(self) -> None:
        self.cpu_seconds: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.seconds = 0.0
        self.p99s: list[float] = []

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def others(self) -> dict[int, int]:
        """Answers other than 2xx: a 401 (an expired token), a 429 or a 5xx costs less than the
        real answer, so a side that gave any is not comparable."""
        return {s: n for s, n in self.statuses.items() if not 200 <= s < 300}

    def cpu_ms(self) -> dict[str, float]:
        answered = self.answered
        if not answered:
            return {}
        return {p: 1000 * s / answered for p, s in self.cpu_seconds.items()}

    def rps(self) -> float:
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return ok / self.seconds if self.seconds else 0.0

    def p99(self) -> float:
        return statistics.median(self.p99s) if self.p99s else 0.0

    def side(self) -> Side:
        from shopbench.issue16 import Side  # this checkout's: main() put bench/ on the path

        return Side(self.cpu_ms(), self.rps(), self.p99())


def compare(
    checkouts: dict[str, Path], keys: list[str], rounds: int, duration: float, workers: int
) -> dict[tuple[str, str], Tally]:
    from shopbench import cpu  # bench/ is on the path: main() put it there
    from shopbench.wrk import find_wrk, run_wrk

    wrk = find_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="shop-ab-"))
    processes = {s: _start(c, workdir / f"{s}.pkl", workers) for s, c in checkouts.items()}
    tallies: dict[tuple[str, str], Tally] = collections.defaultdict(Tally)
    try:
        deadline = time.monotonic() + 300
        while not all((workdir / f"{s}.pkl").exists() for s in checkouts):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes.values()):
                raise RuntimeError(f"a stack did not come up; logs in {workdir}")
            time.sleep(1)
        sides: dict[str, Any] = {  # our own children's files, in our private directory
            s: pickle.loads((workdir / f"{s}.pkl").read_bytes())  # noqa: S301
            for s in checkouts
        }
        for side in sides.values():  # warm-up, unmeasured
            for key in keys:
                load, connections = side["plan"][key]
                run_wrk(wrk, load, duration=2, connections=connections)
        for round_ in range(rounds):
            for key in keys:
                for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                    side = sides[name]
                    load, connections = side["plan"][key]
                    before = cpu.snapshot(side["pids"], side["database"])
                    result = run_wrk(wrk, load, duration=duration, connections=connections)
                    tally = tallies[(name, key)]
                    tally.cpu_seconds.update(
                        cpu.delta(before, cpu.snapshot(side["pids"], side["database"]))
                    )
                    tally.statuses.update(result.statuses)
                    tally.seconds += result.duration_s
                    tally.p99s.append(result.latency_ms.get("p99", 0.0))
    finally:
        for process in processes.values():
            if process.stdin is not None:
                process.stdin.close()
        for process in processes.values():
            process.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    return tallies


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A temporary checkout of `rev` with its own .venv on this interpreter, removed afterwards."""
    git = ["git", "-C", str(HERE.parent), "worktree"]
    parent = Path(tempfile.mkdtemp(prefix="shop-ab-rev-"))
    path = parent / "checkout"
    try:
        subprocess.run([*git, "add", "--detach", str(path), rev], check=True)
        try:
            interpreter = os.path.realpath(sys.executable)  # .venv's python is a link to it
            subprocess.run(
                ["uv", "sync", "--frozen", "--quiet", "--python", interpreter],
                check=True,
                cwd=path,
            )
            yield path
        finally:
            subprocess.run([*git, "remove", "--force", str(path)])
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def report(
    checkouts: dict[str, Path], keys: list[str], tallies: dict[tuple[str, str], Tally]
) -> None:
    for key in keys:
        per = {name: tallies[(name, key)].cpu_ms() for name in checkouts}
        total = {name: sum(per[name].values()) for name in checkouts}
        ratio = f"{total['B'] / total['A']:.3f}" if total["A"] else "-"
        print(f"{key}: total A {total['A']:.3f}  B {total['B']:.3f}  B/A {ratio}")
        a, b = tallies[("A", key)], tallies[("B", key)]
        print(f"  2xx/s A {a.rps():.0f}  B {b.rps():.0f};  p99 A {a.p99():.1f}  B {b.p99():.1f} ms")
        for name in checkouts:
            if other := tallies[(name, key)].others():
                print(f"  ! {name} answered {other} besides 2xx: its figures are not comparable")
        for name in sorted(set(per["A"]) | set(per["B"])):
            cost_a, cost_b = per["A"].get(name, 0.0), per["B"].get(name, 0.0)
            if max(cost_a, cost_b) >= 0.005:
                print(f"  {name:<18} A {cost_a:6.3f}  B {cost_b:6.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?", help="the checkout to compare with (A)")
    parser.add_argument("--rev", help="instead: a commit of this repository to compare with (A)")
    parser.add_argument("--issue16", action="store_true", help="issue 16's lines as ratios")
    parser.add_argument("--only", help=f"scenario keys (default {DEFAULT_KEYS})")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hold", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold is not None:
        hold(args.hold, args.workers)
        return 0
    sys.path.insert(0, str(HERE))
    from shopbench import issue16

    rev = args.rev or (issue16.ISSUE_CODE if args.issue16 and args.other is None else None)
    if (args.other is None) == (rev is None):
        parser.error("name one of: the other checkout, --rev")
    keys = (args.only or (",".join(issue16.SCENARIOS) if args.issue16 else DEFAULT_KEYS)).split(",")
    with contextlib.ExitStack() as stack:
        try:
            other = args.other.resolve() if rev is None else stack.enter_context(worktree(rev))
            checkouts = {"A": other, "B": HERE.parent}
            tallies = compare(checkouts, keys, args.rounds, args.duration, args.workers)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"A = {rev or checkouts['A']}, B = {checkouts['B']}; {args.rounds} alternated rounds of")
    print(f"{args.duration:g} s per scenario, {args.workers} worker(s) a service; ms of CPU per")
    print("request (/proc, as make bench)\n")
    report(checkouts, keys, tallies)
    if args.issue16:
        # only scenarios both sides answered with 2xx alone are judged
        comparable = [k for k in keys if not any(tallies[(n, k)].others() for n in checkouts)]
        sides = {
            name: {key: tallies[(name, key)].side() for key in comparable} for name in checkouts
        }
        verdicts = issue16.judge(sides["A"], sides["B"])
        print(f"\nIssue 16, side by side with its code (A)\n\n{issue16.render(verdicts)}")
        if left_out := [k for k in keys if k not in comparable]:
            print(f"\nNot judged (an answer other than 2xx): {', '.join(left_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
