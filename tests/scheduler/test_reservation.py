"""The starving gang gets a reservation, backfill never delays it, and it starts by then."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rainier.scheduler.policy import RainierScheduler
from rainier.scheduler.types import Allocation, ClusterState, NodeInfo, Quota, Workload

from .invariants import check_all
from .strategies import apply, capacity, end_of, states, workloads

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@st.composite
def starving(draw: st.DrawFn) -> tuple[ClusterState, str]:
    """One tenant, running work that all declares its end, a top-priority gang, and
    lower-priority work that would like to jump ahead of it.

    The tenant either has no contract (everything borrows) or a guarantee larger than the
    cluster (everything is inside it), so the gang is first in line: a reservation promises
    only against work considered after the gang, and guaranteed work is considered before
    borrowing work."""
    base = draw(states())
    flavor = base.nodes[0].flavor
    chips = max(n.chips for n in base.nodes if n.flavor == flavor)
    count = sum(1 for n in base.nodes if n.flavor == flavor and n.schedulable)
    assume(count > 0)
    running = [
        replace(
            a,
            stopping=False,
            workload=replace(
                a.workload,
                tenant="a",
                max_duration_s=a.workload.max_duration_s or 50.0,
                may_preempt_own=False,
            ),
        )
        for a in base.running
    ]
    running = [a for a in running if end_of(a, base.now_s) > base.now_s]
    gang = Workload(
        "gang",
        "a",
        flavor,
        nodes=draw(st.integers(max(1, count // 2), count)),
        chips_per_node=draw(st.integers(chips // 2 + 1, chips)),
        priority=10,
        within=draw(st.sampled_from((None, "rack", "block", "zone"))),
        max_duration_s=100.0,
    )
    others = draw(st.lists(workloads(base.nodes, "o"), max_size=8))
    pending = [gang] + [
        replace(w, tenant="a", kind="job", may_preempt_own=False)
        for w in {w.id: w for w in others}.values()
    ]
    contract = draw(st.booleans())
    everything = {f: 10 * chips for f, chips in capacity(base.nodes).items()}
    quotas = [Quota("a", everything)] if contract else []
    return ClusterState(0.0, base.nodes, quotas, running, pending), gang.id


@SETTINGS
@given(starving())
def test_reserved_gang_starts_no_later_than_its_reservation(case: tuple[ClusterState, str]) -> None:
    state, gang = case
    scheduler = RainierScheduler()
    first = scheduler.schedule(state)
    waits = {w.workload_id: w for w in first.wait}
    assume(gang in waits and waits[gang].reservation_s is not None)
    promised = waits[gang].reservation_s
    assert promised is not None and promised >= state.now_s
    decisions = first
    for _ in range(50):
        check_all(state, decisions)
        if any(a.workload_id == gang for a in decisions.admit):
            break
        waits = {w.workload_id: w for w in decisions.wait}
        again = waits[gang].reservation_s
        assert again is not None and again <= promised
        ends = [end_of(a, state.now_s) for a in apply(state, decisions, state.now_s).running]
        upcoming = [e for e in ends if state.now_s < e < math.inf]
        assert upcoming, "the reservation counted on chips that never come back"
        state = apply(state, decisions, min(upcoming))
        decisions = scheduler.schedule(state)
    assert any(a.workload_id == gang for a in decisions.admit)
    assert state.now_s <= promised


def test_backfill_only_where_it_ends_before_the_reservation() -> None:
    nodes = [NodeInfo(f"n{i}", "h200", 8, "z", "b", f"r{i}") for i in range(4)]
    long_job = Workload("busy", "a", "h200", nodes=2, chips_per_node=8, max_duration_s=1000.0)
    running = [Allocation(long_job, ("n0", "n1"), started_s=0.0)]
    gang = Workload("gang", "a", "h200", nodes=4, chips_per_node=8, priority=9)
    short = Workload("short", "a", "h200", chips_per_node=8, max_duration_s=500.0)
    endless = Workload("endless", "a", "h200", chips_per_node=8)
    too_long = Workload("too-long", "a", "h200", chips_per_node=8, max_duration_s=2000.0)
    state = ClusterState(100.0, nodes, [], running, [gang, short, endless, too_long])
    d = RainierScheduler().schedule(state)
    waits = {w.workload_id: w for w in d.wait}
    assert waits["gang"].reservation_s == 1000.0
    assert "reservation at t=1000" in waits["gang"].reason
    assert [a.workload_id for a in d.admit] == ["short"]
    assert "backfilled" in d.admit[0].reason
    assert "reservation of gang" in waits["endless"].reason
    assert "too-long" in waits


def test_work_that_leaves_the_gang_its_chips_may_run_past_the_reservation() -> None:
    nodes = [NodeInfo(f"n{i}", "h200", 8, "z", "b", f"r{i}") for i in range(2)]
    running = [Allocation(Workload("busy", "a", "h200", 1, 8, max_duration_s=50.0), ("n0",), 0.0)]
    gang = Workload("gang", "a", "h200", nodes=2, chips_per_node=4, priority=9)
    small = Workload("small", "a", "h200", chips_per_node=4)
    d = RainierScheduler().schedule(ClusterState(0.0, nodes, [], running, [gang, small]))
    assert [a.workload_id for a in d.admit] == ["small"]
    assert d.admit[0].node_names == ("n1",)
    assert d.wait[0].reservation_s == 50.0
