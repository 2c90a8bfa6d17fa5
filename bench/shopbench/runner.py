"""Measure the scenarios: warm-up, CPU accounting, optional py-spy, and interleaved rounds.

Scenarios of one `group` (direct vs gateway vs QueuePool) run in alternating rounds, so a burst
of other load on the shared machine hits every side of a comparison alike."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any

from shopbench import cpu, pyspy
from shopbench.environment import BenchEnvironment
from shopbench.scenarios import Scenario
from shopbench.wrk import WrkResult, run_wrk

SERVICES = ("gateway", "users", "catalog", "orders")


@dataclass
class Measured:
    scenario: Scenario
    rounds: list[WrkResult] = field(default_factory=list)
    cpu_seconds: Counter[str] = field(default_factory=Counter)
    wrk_cpu_seconds: float = 0.0
    other_cpu_seconds: float = 0.0  # everything else the machine ran meanwhile
    wall_seconds: float = 0.0
    loadavg: list[float] = field(default_factory=list)
    profile: dict[str, object] | None = None

    def merged(self) -> WrkResult:
        return merge(self.rounds)


def merge(rounds: list[WrkResult]) -> WrkResult:
    """Sum counts and time; latency percentiles are the request-weighted mean of the rounds'
    (an approximation, exact with one round); max is the max."""
    if len(rounds) == 1:
        return rounds[0]
    requests = sum(r.requests for r in rounds)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for r in rounds:
        statuses.update(r.statuses)
        errors.update(r.socket_errors)
    latency: dict[str, float] = {}
    for key in rounds[0].latency_ms:
        if key == "max":
            latency[key] = max(r.latency_ms[key] for r in rounds)
        else:
            weighted = sum(r.latency_ms[key] * r.requests for r in rounds)
            latency[key] = round(weighted / requests, 2) if requests else 0.0
    merged = WrkResult(
        requests=requests,
        duration_s=sum(r.duration_s for r in rounds),
        statuses=dict(statuses),
        socket_errors=dict(errors),
        latency_ms=latency,
    )
    merged.extra["rounds"] = [
        {"rps": round(r.success_rps, 1), "p50": r.latency_ms["p50"], "p99": r.latency_ms["p99"]}
        for r in rounds
    ]
    return merged


class Runner:
    def __init__(
        self,
        wrk: str,
        env: BenchEnvironment,
        *,
        duration: float,
        warmup: float,
        rounds: int,
        profiled: set[str],
        profile_gil: bool,
        profile_dir: Path,
        say: Callable[[str], None],
    ) -> None:
        self.wrk = wrk
        self.env = env
        self.duration = duration
        self.warmup = warmup
        self.rounds = rounds
        self.profiled = profiled
        self.profile_gil = profile_gil
        self.profile_dir = profile_dir
        self.say = say

    def run(self, plan: list[Scenario]) -> dict[str, Measured]:
        """Scenarios in plan order; a group runs, interleaved, where its first member stands."""
        done: dict[str, Measured] = {}
        for scenario in plan:
            if scenario.key in done:
                continue
            group = [s for s in plan if scenario.group and s.group == scenario.group] or [scenario]
            for member in group:
                done[member.key] = Measured(member)
                if member.warmup and self.warmup > 0:
                    run_wrk(
                        self.wrk, member.load, duration=self.warmup, connections=member.connections
                    )
            rounds = self.rounds if len(group) > 1 else 1
            for _ in range(rounds):
                for member in group:
                    self._measure(done[member.key], member.duration(self.duration) / rounds)
            for member in group:
                result = done[member.key].merged()
                lat = result.latency_ms
                self.say(
                    f"{member.key:<22} {result.success_rps:8.1f} ok/s  p50 {lat['p50']:7.2f}  "
                    f"p95 {lat['p95']:7.2f}  p99 {lat['p99']:7.2f} ms  "
                    f"{dict(sorted(result.statuses.items()))}"
                )
        return done

    def _measure(self, measured: Measured, duration: float) -> None:
        scenario = measured.scenario
        pids = self.env.pids()
        recording = None
        if scenario.key in self.profiled and measured.profile is None:
            services = {n: p for n, p in pids.items() if n in SERVICES}
            recording = pyspy.record(
                services, duration, self.profile_dir, scenario.key, self.profile_gil
            )
        database = self.env.stack.config.database
        if not measured.loadavg:
            measured.loadavg = [round(x, 2) for x in os.getloadavg()]
        before = cpu.snapshot(pids, database)
        busy, children, start = cpu.machine_busy_seconds(), cpu.children_seconds(), monotonic()
        result = run_wrk(
            self.wrk, scenario.load, duration=max(1.0, duration), connections=scenario.connections
        )
        used = cpu.delta(before, cpu.snapshot(pids, database))
        wrk_cpu = cpu.children_seconds() - children
        measured.wall_seconds += monotonic() - start
        measured.wrk_cpu_seconds += wrk_cpu
        measured.other_cpu_seconds += max(
            0.0, cpu.machine_busy_seconds() - busy - sum(used.values()) - wrk_cpu
        )
        measured.cpu_seconds.update(used)
        measured.rounds.append(result)
        if recording is not None:
            measured.profile = pyspy.finish(recording)


def scenario_json(measured: Measured) -> dict[str, Any]:
    scenario, result = measured.scenario, measured.merged()
    wall = measured.wall_seconds or 1.0
    return {
        "title": scenario.title,
        "path": scenario.load.path,
        "method": scenario.load.method,
        "via": scenario.process,
        "connections": scenario.connections,
        **result.to_json(),
        "cpu_ms_per_request": cpu.per_request_ms(measured.cpu_seconds, result.requests),
        "wrk_cpu_cores": round(measured.wrk_cpu_seconds / wall, 2),
        # CPU the rest of the machine (other people's work) took meanwhile, in cores
        "other_load_cores": round(measured.other_cpu_seconds / wall, 2),
        "loadavg_before": measured.loadavg,
    }
