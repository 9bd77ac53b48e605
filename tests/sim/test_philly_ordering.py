"""rainier's policy against FIFO and backfill on a Philly-shaped workload, small enough for the
suite: the same comparison as the 100,000-job run in `rainier/sim/README.md`, on 256 chips.

Philly's run times are heavy-tailed (median 20 minutes, mean 4 hours), so a short trace only
queues when its offered load is well above 1; at 1.5 this one keeps a queue for most of its two
days of arrivals, with gangs of up to 128 GPUs on a cluster of 256.

One seed could hide a policy that keeps guarantees only by luck, so smaller clusters are run on
several seeds too. On two of them a gang as wide as the whole cluster borrows, and rainier loses
to backfill on mean JCT: guaranteed work must start within a grace period, so the cluster never
drains for the gang until arrivals stop, where backfill holds everyone behind it. Those are
recorded as expected failures, so a policy that fixes them shows up here.
"""

from __future__ import annotations

import functools

import pytest

from rainier.sim.generator import (
    GeneratorConfig,
    data_file,
    generate,
    read_runtimes,
    read_tenant_sizes,
)
from rainier.sim.metrics import summarize
from rainier.sim.model import Cluster, FlavorPool, TenantContract, Trace

from .conftest import run


def _setup(
    nodes: int = 32, jobs: int = 2000, load: float = 1.5, seed: int = 2
) -> tuple[Cluster, Trace]:
    sizes = read_tenant_sizes(data_file("helios_venus_vc_gpus.csv"))
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:4]
    total = sum(size for _, size in largest)
    pool = FlavorPool("h200", nodes, 8, nodes_per_block=4, blocks_per_rack=2, zones=2)
    # 70% of the chips are guaranteed, in proportion to the Helios virtual clusters' sizes;
    # the rest is there to be borrowed.
    contracts = tuple(
        TenantContract(name, {"h200": int(0.7 * pool.chips * size / total)})
        for name, size in largest
    )
    cluster = Cluster((pool,), contracts)
    trace = generate(
        read_runtimes(data_file("philly_runtime.csv")),
        sizes,
        cluster,
        GeneratorConfig(jobs=jobs, seed=seed, load=load),
    )
    return cluster, trace


@pytest.fixture(scope="module")
def summaries() -> dict[str, dict[str, object]]:
    cluster, trace = _setup()
    return {p: summarize(run(cluster, trace, p)) for p in ("rainier", "fifo", "backfill")}


def test_rainier_beats_fifo_and_backfill_on_mean_jct_and_keeps_every_guarantee(
    summaries: dict[str, dict[str, object]],
) -> None:
    def mean_jct(policy: str) -> float:
        jct = summaries[policy]["jct_s"]
        assert isinstance(jct, dict)
        return float(jct["mean"])

    for s in summaries.values():
        assert s["completed"] == 2000
    # The workload queues: otherwise every policy would tie at the jobs' run times.
    wait = summaries["backfill"]["wait_s"]
    assert isinstance(wait, dict) and wait["mean"] > 60
    assert mean_jct("rainier") < mean_jct("backfill") < mean_jct("fifo")
    assert summaries["rainier"]["guarantee_violations"] == 0
    # The baselines know nothing of contracts, and it shows.
    assert summaries["backfill"]["guarantee_violations"] > 0


# (nodes of 8 chips, jobs, offered load, seed)
SMALL = [(8, 600, 1.5, 1), (8, 600, 1.5, 4), (16, 600, 1.2, 1)]
WHOLE_CLUSTER_GANG = [(8, 600, 1.5, 3), (16, 600, 1.2, 2)]


def _mean_jct(summary: dict[str, object]) -> float:
    jct = summary["jct_s"]
    assert isinstance(jct, dict)
    return float(jct["mean"])


@functools.cache
def _compare(case: tuple[int, int, float, int]) -> dict[str, dict[str, object]]:
    cluster, trace = _setup(*case)
    return {p: summarize(run(cluster, trace, p)) for p in ("rainier", "fifo", "backfill")}


@pytest.mark.parametrize("case", SMALL + WHOLE_CLUSTER_GANG, ids=str)
def test_small_clusters_keep_every_guarantee_and_beat_fifo(
    case: tuple[int, int, float, int],
) -> None:
    s = _compare(case)
    # Every policy finishes the same jobs (a gang wider than the cluster finishes under none).
    assert len({summary["completed"] for summary in s.values()}) == 1
    assert s["rainier"]["guarantee_violations"] == 0
    assert _mean_jct(s["rainier"]) < _mean_jct(s["fifo"])


@pytest.mark.parametrize("case", SMALL, ids=str)
def test_small_clusters_beat_backfill(case: tuple[int, int, float, int]) -> None:
    s = _compare(case)
    assert _mean_jct(s["rainier"]) < _mean_jct(s["backfill"])


@pytest.mark.xfail(strict=True, reason="a borrowing gang as wide as the cluster waits for a drain")
@pytest.mark.parametrize("case", WHOLE_CLUSTER_GANG, ids=str)
def test_whole_cluster_borrowing_gangs_beat_backfill(case: tuple[int, int, float, int]) -> None:
    s = _compare(case)
    assert _mean_jct(s["rainier"]) < _mean_jct(s["backfill"])
