"""Issue 16's targets as ratios to the code it measured, side by side in one run (bench/ab.py
--issue16).

The issue set absolute targets ("on this 2-core machine") at about a third of what its code cost
then. These machines differ by more than a factor of two from one session to the next, and not
by the same factor for every path, so an absolute figure passes on one and misses on the next.
Each target here is the issue's target divided by its own "now" figure, read strictly: CPU and
p99 against the dearest "now" the issue quotes (the smallest allowed ratio), throughput against
the slowest (the largest multiple asked for). bench/ab.py runs the issue's code (ISSUE_CODE, the
commit the issue's figures were measured on) and this checkout side by side, alternated, and
each line compares the two sides of one run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# acbbd2b (2026-11-26 14:33): the code of `make bench`'s 14:19 run, whose figures are the issue's
# "now" column (a devstack refactor on top of 738ff64; the services are the same).
ISSUE_CODE = "acbbd2b"
SCENARIOS = ("users_me_gateway", "product_gateway", "order_gateway")


@dataclass(frozen=True)
class Side:
    """One checkout's figures for one scenario: CPU per request by process, 2xx per second, p99."""

    cpu_ms: Mapping[str, float]
    rps: float
    p99_ms: float


@dataclass(frozen=True)
class Line:
    what: str
    issue: str  # the issue's "now" and target, as it wrote them
    limit: float  # the allowed new/old ratio: at least this for throughput, at most otherwise
    scenario: str
    measure: str  # a process (its CPU), "all" (CPU of every process), "rps" (2xx/s) or "p99"

    @property
    def at_most(self) -> bool:
        return self.measure != "rps"


LINES = (
    Line(
        "GET /products/{id}: catalog CPU", "3.9 → ≤ 1.3 ms", 1.3 / 3.9, "product_gateway", "catalog"
    ),
    Line("GET /users/me: users CPU", "2.5-3.1 → ≤ 1.0 ms", 1.0 / 3.1, "users_me_gateway", "users"),
    Line(
        "POST /orders/: CPU of all processes",
        "20.6-21.4 → ≤ 8 ms",
        8 / 21.4,
        "order_gateway",
        "all",
    ),
    Line(
        "gateway CPU per proxied request",
        "0.30-0.44 → ≤ 0.25 ms",
        0.25 / 0.44,
        "product_gateway",
        "gateway",
    ),
    Line("POST /orders/ throughput", "76-78 → ≥ 200/s", 200 / 76, "order_gateway", "rps"),
    Line("POST /orders/ p99", "333-520 → ≤ 150 ms", 150 / 520, "order_gateway", "p99"),
    Line("GET /users/me throughput", "332-406 → ≥ 1,000/s", 1000 / 332, "users_me_gateway", "rps"),
    Line("GET /products/{id} throughput", "174-247 → ≥ 700/s", 700 / 174, "product_gateway", "rps"),
)


@dataclass(frozen=True)
class Verdict:
    line: Line
    old: float
    new: float

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else float("inf")

    @property
    def passed(self) -> bool:
        return self.ratio <= self.line.limit if self.line.at_most else self.ratio >= self.line.limit


def _value(line: Line, side: Side) -> float:
    if line.measure == "rps":
        return side.rps
    if line.measure == "p99":
        return side.p99_ms
    if line.measure == "all":
        return sum(side.cpu_ms.values())
    return side.cpu_ms.get(line.measure, 0.0)


def judge(old: Mapping[str, Side], new: Mapping[str, Side]) -> list[Verdict]:
    """Every line whose scenario both sides ran, in LINES' order."""
    return [
        Verdict(line, _value(line, old[line.scenario]), _value(line, new[line.scenario]))
        for line in LINES
        if line.scenario in old and line.scenario in new
    ]


def render(verdicts: list[Verdict]) -> str:
    rows = [
        "| issue 16 line | issue: now → target | allowed new/old | issue's code | this code "
        "| new/old | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for v in verdicts:
        sign = "≤" if v.line.at_most else "≥"
        unit = "/s" if v.line.measure == "rps" else " ms"
        rows.append(
            f"| {v.line.what} | {v.line.issue} | {sign} {v.line.limit:.2f} "
            f"| {v.old:.2f}{unit} | {v.new:.2f}{unit} | {v.ratio:.2f} "
            f"| {'pass' if v.passed else '**miss**'} |"
        )
    return "\n".join(rows)
