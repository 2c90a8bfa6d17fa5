"""Targets of DESIGN §8 (issue 16's table: CPU per request and throughput), and the three outputs: latest.json, latest.md, latency.png."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shopbench.revocation import markdown as revocation_markdown


@dataclass(frozen=True)
class Target:
    what: str
    target: str
    measured: str
    passed: bool | None  # None: not measured in this run


def _ratio(results: dict[str, Any], numerator: str, denominator: str) -> float | None:
    a, b = results.get(numerator), results.get(denominator)
    if a is None or b is None or not b["success_rps"]:
        return None
    return float(a["success_rps"]) / float(b["success_rps"])


def comparisons(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gateway = _ratio(results, "product_gateway", "product_direct")
    if gateway is not None:
        out["gateway_vs_direct"] = {"throughput_ratio": round(gateway, 3)}
    serial = [results.get(k) for k in ("product_direct_serial", "product_gateway_serial")]
    if serial[0] is not None and serial[1] is not None:
        added = serial[1]["latency_ms"]["p50"] - serial[0]["latency_ms"]["p50"]
        out.setdefault("gateway_vs_direct", {})["p50_added_ms_serial"] = round(added, 2)
    pool = _ratio(results, "product_direct", "product_queuepool")
    if pool is not None:
        out["nullpool_pgbouncer_vs_queuepool_direct"] = {"throughput_ratio": round(pool, 3)}
    return out


def _cpu(scenario: dict[str, Any] | None, process: str) -> float | None:
    """CPU ms per request of one process (or "total") in a scenario; None when it did not run."""
    if scenario is None or not scenario["requests"]:
        return None
    value = scenario["cpu_ms_per_request"].get(process)
    return None if value is None else float(value)


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def targets(
    results: dict[str, Any], compared: dict[str, Any], contention: dict[str, Any] | None
) -> list[Target]:
    lines: list[Target] = []

    def add(what: str, target: str, value: float | None, fmt: str, ok: bool | None) -> None:
        lines.append(Target(what, target, "not run" if value is None else fmt.format(value), ok))

    gw = compared.get("gateway_vs_direct")
    ratio = gw.get("throughput_ratio") if gw else None
    add(
        "gateway vs direct, `GET /products/{id}` throughput",
        "≥ 0.9x",
        ratio,
        "{:.2f}x",
        None if ratio is None else ratio >= 0.9,
    )
    product = results.get("product_gateway")
    add(
        "gateway CPU per proxied request (`GET /products/{id}`)",
        "≤ 0.25 ms",
        _cpu(product, "gateway"),
        "{:.2f} ms",
        _at_most(_cpu(product, "gateway"), 0.25),
    )
    add(
        "`GET /products/{id}` through the gateway: catalog CPU",
        "≤ 1.3 ms",
        _cpu(product, "catalog"),
        "{:.2f} ms",
        _at_most(_cpu(product, "catalog"), 1.3),
    )
    add(
        "`GET /products/{id}` through the gateway: throughput",
        "≥ 700/s",
        product and product["success_rps"],
        "{:.0f}/s",
        None if product is None else product["success_rps"] >= 700,
    )
    me = results.get("users_me_gateway")
    add(
        "`GET /users/me` through the gateway: users CPU",
        "≤ 1.0 ms",
        _cpu(me, "users"),
        "{:.2f} ms",
        _at_most(_cpu(me, "users"), 1.0),
    )
    add(
        "`GET /users/me` through the gateway: throughput",
        "≥ 1,000/s",
        me and me["success_rps"],
        "{:.0f}/s",
        None if me is None else me["success_rps"] >= 1000,
    )
    order = results.get("order_gateway")
    add(
        "`POST /orders/` through the gateway: CPU of all processes",
        "≤ 8 ms",
        _cpu(order, "total"),
        "{:.2f} ms",
        _at_most(_cpu(order, "total"), 8.0),
    )
    add(
        "`POST /orders/` through the gateway: throughput",
        "≥ 200/s",
        order and order["success_rps"],
        "{:.0f}/s",
        None if order is None else order["success_rps"] >= 200,
    )
    add(
        "`POST /orders/` through the gateway: p99",
        "≤ 150 ms",
        order and order["latency_ms"]["p99"],
        "{:.1f} ms",
        None if order is None else order["success_rps"] > 0 and order["latency_ms"]["p99"] <= 150,
    )
    token = results.get("auth_token_gateway")
    add(
        "`POST /auth/token` (Argon2id OWASP minimum)",
        "≥ 40/s",
        token and token["success_rps"],
        "{:.0f}/s",
        None if token is None else token["success_rps"] >= 40,
    )
    pool = compared.get("nullpool_pgbouncer_vs_queuepool_direct")
    add(
        "NullPool through PgBouncer vs small QueuePool direct (reads)",
        "≥ 0.8x",
        pool and pool["throughput_ratio"],
        "{:.2f}x",
        None if pool is None else pool["throughput_ratio"] >= 0.8,
    )
    if contention is None:
        lines.append(
            Target("scarce stock under contention: no oversell", "invariant holds", "not run", None)
        )
    else:
        answers = contention["answers"]
        lines.append(
            Target(
                "scarce stock under contention: no oversell",
                f"exactly {contention['initial_stock']} sold (201, or 202 settled), invariant holds",
                f"{answers['201']} x 201, {answers.get('202', 0)} x 202, {answers['409']} x 409, "
                f"{answers['other']} other; "
                f"stock left {contention['database']['available']}",
                bool(contention["ok"]),
            )
        )
    return lines


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**miss**", None: "—"}[passed]


def markdown(report: dict[str, Any]) -> str:
    meta = report["run"]
    out = [
        "# Benchmark results",
        "",
        f"Run {meta['finished_at']} on {meta['cpus']} CPUs ({meta['platform']}), {meta['wrk']}, "
        f"{meta['duration_s']} s per scenario after a {meta['warmup_s']} s warm-up"
        + (" (**quick smoke run**: numbers are indicative only)" if meta["quick"] else "")
        + f". Load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}.",
        "",
        f"Worker processes (`WEB_CONCURRENCY`): {meta.get('workers', 1)} each for users, catalog "
        "and orders; 1 for the gateway. Environment per process: "
        f"{meta['extra_env']}, pool_all={meta['pool_all']}.",
        "",
        "## Targets (DESIGN §8)",
        "",
        "| what | target | measured | verdict |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {t['what']} | {t['target']} | {t['measured']} | {_verdict(t['passed'])} |"
        for t in report["targets"]
    ]
    out += [
        "",
        "## Scenarios",
        "",
        "Throughput counts 2xx answers only (for the contention run: 201 and 409 both count as "
        "answered; see its line). Latencies are wrk's, over every answer, in milliseconds. "
        "*Other load*: CPU cores that processes outside the benchmark (other work on this shared "
        "machine) used during the run; the machine has "
        f"{meta['cpus']} cores in all.",
        "",
        "| scenario | connections | req/s | p50 | p95 | p99 | max | answers | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key, r in report["scenarios"].items():
        lat = r["latency_ms"]
        rps = r["rps"] if key == "order_contention" else r["success_rps"]
        answers = ", ".join(f"{n} x {s}" for s, n in r["statuses"].items())
        errors = sum(r["socket_errors"].values())
        if errors:
            answers += f", {errors} socket errors"
        out.append(
            f"| {r['title']} | {r['connections']} | {rps:,.0f} | {lat['p50']:.1f} | "
            f"{lat['p95']:.1f} | {lat['p99']:.1f} | {lat['max']:.1f} | {answers} | "
            f"{r.get('other_load_cores', 0):.2f} |"
        )
    columns = (
        "gateway",
        "users",
        "catalog",
        "catalog_queuepool",
        "orders",
        "pgbouncer",
        "postgres",
    )
    out += [
        "",
        "## Where the CPU goes (ms of CPU per request, by process)",
        "",
        "From /proc utime+stime during each measured run, divided by the requests answered; far "
        "less sensitive to other load on the machine than throughput. `postgres` sums the backends "
        "serving the bench database. The ceiling is CPUs x 1000 / total, in requests/s "
        "(wrk's own CPU not counted).",
        "",
        "| scenario | " + " | ".join(columns) + " | total | ceiling req/s |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    for key, r in report["scenarios"].items():
        used = r.get("cpu_ms_per_request") or {}
        cells = [f"{used[c]:.2f}" if c in used else "" for c in columns]
        total = used.get("total", 0.0)
        ceiling = f"{meta['cpus'] * 1000 / total:,.0f}" if total else ""
        out.append(f"| {key} | " + " | ".join(cells) + f" | {total:.2f} | {ceiling} |")
    if report.get("revocation_check"):
        out += revocation_markdown(report["revocation_check"])
    contention = report.get("contention")
    if contention:
        out += ["", "## Contention check (scenario 4)", ""]
        out += [f"- {'✔' if ok else '✘'} {name}" for name, ok in contention["checks"].items()]
        db = contention["database"]
        out.append(
            f"- database after the run: available {db['available']}, held {db['held']}, "
            f"committed {db['committed']}, pending orders {db['pending_orders']}, "
            f"orders in placing {db['placing_orders']}"
        )
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(report["scenarios"])
    scenarios = [report["scenarios"][k] for k in keys]
    labels = [
        f"{k} (c={s['connections']}, {s['success_rps']:,.0f}/s)"
        for k, s in zip(keys, scenarios, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(scenarios) + 1.8))
    height = 0.26
    for offset, (p, colour) in enumerate(
        (("p50", "#4c72b0"), ("p95", "#dd8452"), ("p99", "#c44e52"))
    ):
        ax.barh(
            [i + (offset - 1) * height for i in range(len(scenarios))],
            [s["latency_ms"][p] for s in scenarios],
            height,
            label=p,
            color=colour,
        )
    ax.set_yticks(range(len(scenarios)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.axvline(150, color="grey", linestyle=":", linewidth=1, label="150 ms (orders p99 target)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8, frameon=False)
    meta = report["run"]
    ax.set_title(
        f"Latency percentiles per scenario — {meta['cpus']} CPUs, {meta['finished_at']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    report = {
        **report,
        "targets": [asdict(t) if isinstance(t, Target) else t for t in report["targets"]],
    }
    (directory / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (directory / "latest.md").write_text(markdown(report))
    plot(report, directory / "latency.png")
