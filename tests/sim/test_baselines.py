from __future__ import annotations

import numpy as np
import pytest

from rainier.scheduler.types import Allocation, ClusterState, NodeInfo, Workload
from rainier.sim.baselines import BackfillScheduler, FifoScheduler, FreeChips, SjfOracle
from rainier.sim.metrics import summarize
from rainier.sim.model import TraceJob
from rainier.sim.records import DONE

from .conftest import cluster, job, random_gangs, run


def mean_jct(result: object) -> float:
    return float(summarize(result)["jct_s"]["mean"])  # type: ignore[arg-type]


def test_gangs_land_on_distinct_nodes_of_their_flavor(gangs: list[TraceJob]) -> None:
    for policy in ("fifo", "backfill", "sjf"):
        result = run(cluster(6, 8), gangs[:300], policy)
        assert all(js.state == DONE for js in result.jobs)
        for js in result.jobs:
            assert len(set(js.node_ids)) == js.job.nodes


def test_strict_fifo_starts_jobs_in_submission_order(gangs: list[TraceJob]) -> None:
    result = run(cluster(6, 8), gangs, "fifo")
    starts = [js.first_start_s for js in sorted(result.jobs, key=lambda js: js.job.submit_s)]
    assert starts == sorted(starts)


def test_backfill_never_delays_the_head_reservation(gangs: list[TraceJob]) -> None:
    result = run(cluster(6, 8), gangs, "backfill", record_reservations=True)
    promised = [js for js in result.jobs if np.isfinite(js.reservation_s)]
    assert len(promised) > 20
    late = [js.job.id for js in promised if js.first_start_s > js.reservation_s + 1e-6]
    assert late == []
    fifo = run(cluster(6, 8), gangs, "fifo")
    out_of_order = sum(
        1
        for a, b in zip(
            sorted(result.jobs, key=lambda js: js.job.submit_s),
            sorted(result.jobs, key=lambda js: js.job.submit_s)[1:],
            strict=False,
        )
        if b.first_start_s < a.first_start_s
    )
    assert out_of_order > 0
    assert summarize(result)["wait_s"]["mean"] < summarize(fifo)["wait_s"]["mean"]


def test_backfill_rule_on_a_hand_built_state() -> None:
    nodes = [NodeInfo(f"n{i}", "h200", 8) for i in range(2)]
    long = Workload("long", "a", "h200", 1, 8, max_duration_s=1000)
    state = ClusterState(
        now_s=0,
        nodes=nodes,
        quotas=[],
        running=[Allocation(long, ("n0",), started_s=0)],
        pending=[
            Workload("head", "a", "h200", 2, 8, submitted_s=1, max_duration_s=100),
            Workload("fits-before", "a", "h200", 1, 8, submitted_s=2, max_duration_s=1000),
            Workload("too-long", "a", "h200", 1, 4, submitted_s=3, max_duration_s=1001),
            Workload("no-limit", "a", "h200", 1, 4, submitted_s=4),
        ],
    )
    d = BackfillScheduler().schedule(state)
    assert [a.workload_id for a in d.admit] == ["fits-before"]
    assert [(w.workload_id, w.reservation_s) for w in d.wait] == [("head", 1000)]
    assert FifoScheduler().schedule(state).admit == []


def test_sjf_oracle_beats_fifo_on_mean_jct(gangs: list[TraceJob]) -> None:
    c = cluster(6, 8)
    assert mean_jct(run(c, gangs, "sjf")) <= mean_jct(run(c, gangs, "fifo"))


@pytest.mark.parametrize("seed", [1, 2])
def test_sjf_oracle_beats_fifo_on_single_chip_jobs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    jobs = [
        job(f"s{i}", float(t), float(d))
        for i, (t, d) in enumerate(
            zip(np.cumsum(rng.exponential(30, 2000)), rng.exponential(100, 2000), strict=True)
        )
    ]
    c = cluster(1, 4)
    sjf, fifo = mean_jct(run(c, jobs, "sjf")), mean_jct(run(c, jobs, "fifo"))
    assert sjf < fifo


def test_best_fit_keeps_whole_nodes_free() -> None:
    nodes = [NodeInfo("n0", "h200", 8), NodeInfo("n1", "h200", 8)]
    small = Workload("small", "a", "h200", 1, 6)
    state = ClusterState(0, nodes, [], [Allocation(small, ("n0",), 0)], [])
    free = FreeChips(state)
    assert free.take("h200", 1, 2) == ("n0",)
    assert free.take("h200", 1, 8) == ("n1",)
    assert free.take("h200", 1, 1) is None


def test_many_queues_are_all_visible_through_the_window() -> None:
    jobs = random_gangs(400, seed=9, tenants=5, load_s=100.0)
    narrow = run(cluster(4, 8), jobs, "fifo", queue_window=1)
    wide = run(cluster(4, 8), jobs, "fifo", queue_window=10_000)
    assert [js.first_start_s for js in narrow.jobs] == [js.first_start_s for js in wide.jobs]


def test_sjf_reads_true_durations() -> None:
    sjf = SjfOracle({"short": 1.0, "long": 100.0})
    nodes = [NodeInfo("n0", "h200", 1)]
    state = ClusterState(
        0,
        nodes,
        [],
        [],
        [
            Workload("long", "a", "h200", submitted_s=0),
            Workload("short", "a", "h200", submitted_s=5),
        ],
    )
    assert [a.workload_id for a in sjf.schedule(state).admit] == ["short"]
