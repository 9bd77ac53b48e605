from __future__ import annotations

import json
import re
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from rainier.sim.errors import SimInputError
from rainier.sim.metrics import jain, summarize
from rainier.sim.model import Cluster, FlavorPool, TenantContract, Trace
from rainier.sim.plan import parse_target, plan
from rainier.sim.report import write_report

from .conftest import cluster, job, random_gangs, run


def test_report_is_self_contained_with_pngs_and_json(tmp_path: Path) -> None:
    c = cluster(6, 8, [TenantContract("t0", {"h200": 16}), TenantContract("t1", {"h200": 8})])
    jobs = random_gangs(300, seed=5)
    results = [run(c, jobs, p) for p in ("fifo", "backfill")]
    summaries = [summarize(r) for r in results]
    paths = write_report(results, summaries, tmp_path / "out", {"trace": "gangs"})
    for name in ("utilization", "queue", "jct_cdf", "tenants"):
        assert paths[name].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=["']?(https?:|//|/|file:)""", page)
    assert "<table>" in page and "backfill" in page
    summary = json.loads(paths["summary"].read_text())
    assert set(summary["policies"]) == {"fifo", "backfill"}
    fifo = summary["policies"]["fifo"]
    assert fifo["completed"] == 300
    assert float(fifo["billed_usd"]) > 0
    assert 0 < fifo["utilization"]["h200"] <= 1
    series = fifo["timeline"]["utilization_h200"]
    assert len(series) == len(fifo["timeline"]["t_s"]) == 100
    assert max(series) <= 1 and max(series) > fifo["utilization"]["h200"]
    assert fifo["tenants"]["t0"]["guaranteed_chips"] == {"h200": 16}


def test_money_follows_list_price_and_discount() -> None:
    c = cluster(1, 8, [TenantContract("a", {"h200": 8}, discount=Decimal("0.5"))])
    s = summarize(run(c, [job("x", 0, 3600, chips_per_node=8)], "fifo"))
    assert s["tenants"]["a"]["chip_hours"] == {"h200": 8.0}
    assert s["tenants"]["a"]["billed_usd"] == "18.00"


def test_jain_index() -> None:
    assert jain([1.0, 1.0, 1.0]) == 1.0
    assert jain([1.0, 0.0]) == pytest.approx(0.5)
    assert jain([]) is None


@pytest.mark.parametrize(
    ("text", "stat", "metric", "limit"),
    [
        ("p95_wait<1h", "p95", "wait", 3600),
        ("mean_jct <= 30m", "mean", "jct", 1800),
        ("p99_wait<90", "p99", "wait", 90),
        ("p50_jct<1.5d", "p50", "jct", 129600),
    ],
)
def test_targets_parse_with_units(text: str, stat: str, metric: str, limit: float) -> None:
    t = parse_target(text)
    assert (t.stat, t.metric, t.limit_s) == (stat, metric, limit)


@pytest.mark.parametrize("text", ["p95_wait>1h", "p90_wait<1h", "p95_queue<1h", "p95_wait<1y", ""])
def test_bad_targets_are_rejected(text: str) -> None:
    with pytest.raises(SimInputError, match="--target"):
        parse_target(text)


def test_plan_finds_the_smallest_size_meeting_the_target() -> None:
    jobs = Trace(random_gangs(300, seed=8))
    target = parse_target("p95_wait<10m")
    result = plan(cluster(6, 8), jobs, target, flavor="h200", policy="backfill")
    assert result.best_nodes is not None
    curve = result.curve()
    assert len(curve) >= 4
    best = next(p for p in curve if p.nodes == result.best_nodes)
    assert best.met
    assert all(not p.met for p in curve if p.nodes < result.best_nodes)
    values = [p.value_s for p in curve]
    drops = sum(1 for a, b in pairwise(values) if b <= a)
    assert drops >= len(values) - 2
    assert values[0] > values[-1]


def test_plan_unknown_flavor_is_an_input_error() -> None:
    with pytest.raises(SimInputError, match="--flavor"):
        plan(cluster(1, 8), Trace([]), parse_target("p95_wait<1h"), flavor="trn2")


def test_utilization_over_the_run_and_while_jobs_arrive() -> None:
    jobs = [job("x", 0, 3600, chips_per_node=8), job("y", 7200, 7200, chips_per_node=4)]
    s = summarize(run(cluster(1, 8), jobs, "fifo"))
    assert s["utilization_while_arriving"]["h200"] == pytest.approx(0.5, abs=0.01)
    assert s["utilization"]["h200"] == pytest.approx((3600 * 8 + 7200 * 4) / (14400 * 8))
    assert s["makespan_s"] == 14400


def test_plan_without_a_flavor_scales_every_pool() -> None:
    two = Cluster((FlavorPool("h200", 8, 8), FlavorPool("trn2", 4, 16)))
    jobs = random_gangs(200, seed=4)
    jobs += [
        job(f"t{i}", 300.0 * i, 1200, flavor="trn2", chips_per_node=16, max_duration_s=2400)
        for i in range(60)
    ]
    result = plan(two, Trace(jobs), parse_target("mean_wait<5m"), policy="backfill")
    assert result.flavor == "h200" and result.best_cluster is not None
    best = {p.flavor: p.nodes for p in result.best_cluster.pools}
    assert best["h200"] == result.best_nodes
    assert best["trn2"] == max(1, -(-4 * best["h200"] // 8))
