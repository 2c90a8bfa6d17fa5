"""bench/ab.py --issue16: each of issue 16's lines judged as a ratio of two sides of one run."""

from __future__ import annotations

import pytest
from shopbench.issue16 import LINES, SCENARIOS, Side, judge, render


def _sides(old_scale: float, new_scale: float) -> tuple[dict[str, Side], dict[str, Side]]:
    """Two runs of the three scenarios: CPU and p99 times `scale`, throughput divided by it."""

    def side(scale: float) -> dict[str, Side]:
        return {
            "users_me_gateway": Side({"users": 3.0 * scale, "gateway": 0.4}, 300 / scale, 60),
            "product_gateway": Side(
                {"catalog": 4.0 * scale, "gateway": 0.4 * scale, "postgres": 1.0}, 200 / scale, 80
            ),
            "order_gateway": Side(
                {"orders": 8.0 * scale, "catalog": 8.0 * scale}, 70 / scale, 400 * scale
            ),
        }

    return side(old_scale), side(new_scale)


def test_every_line_is_judged_when_all_three_scenarios_ran() -> None:
    old, new = _sides(1.0, 0.25)
    verdicts = judge(old, new)
    assert [v.line for v in verdicts] == list(LINES)
    assert {line.scenario for line in LINES} == set(SCENARIOS)


def test_a_fifth_of_the_cost_passes_every_line_and_a_quarter_misses_the_product_throughput() -> (
    None
):
    verdicts = judge(*_sides(1.0, 0.2))
    assert all(v.passed for v in verdicts), render(verdicts)
    catalog = next(v for v in verdicts if v.line.measure == "catalog")
    assert catalog.old == 4.0
    assert catalog.new == pytest.approx(0.8)

    verdicts = judge(*_sides(1.0, 0.25))
    missed = [v.line.what for v in verdicts if not v.passed]
    assert missed == ["GET /products/{id} throughput"]  # 4x, where the issue asked 700/174 = 4.02x


def test_half_the_cost_misses_every_cpu_line_and_a_ratio_is_read_in_its_direction() -> None:
    old, new = _sides(1.0, 0.5)
    by_what = {v.line.what: v for v in judge(old, new)}
    assert not by_what["GET /users/me: users CPU"].passed  # 0.5 > 1.0 / 3.1
    assert not by_what["POST /orders/: CPU of all processes"].passed
    assert not by_what["POST /orders/ throughput"].passed  # 2x < 200 / 76
    assert not by_what["POST /orders/ p99"].passed
    # the gateway's own CPU did not change on /users/me, but its line is read on the product read
    assert by_what["gateway CPU per proxied request"].ratio == 0.5


def test_the_limits_are_the_issues_targets_over_its_now_read_strictly() -> None:
    limits = {line.what: line.limit for line in LINES}
    assert limits["GET /users/me: users CPU"] == 1.0 / 3.1  # against 3.1 ms, not 2.5
    assert limits["GET /users/me throughput"] == 1000 / 332  # against 332/s, not 406
    assert limits["POST /orders/ p99"] == 150 / 520


def test_a_scenario_one_side_did_not_run_is_left_out() -> None:
    old, new = _sides(1.0, 0.25)
    del new["order_gateway"]
    assert {v.line.scenario for v in judge(old, new)} == {"users_me_gateway", "product_gateway"}


def test_render_marks_each_line() -> None:
    old, new = _sides(1.0, 0.5)
    table = render(judge(old, new))
    assert table.count("\n") == len(LINES) + 1
    assert "**miss**" in table
    assert "| GET /products/{id} throughput | 174-247 → ≥ 700/s | ≥ 4.02 |" in table
