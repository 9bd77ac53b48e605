"""Guaranteed work gets in within one pass, by preempting borrowers if it must."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainier.scheduler.policy import RainierScheduler
from rainier.scheduler.types import ClusterState, Workload

from .invariants import check_all
from .strategies import apply, states, workloads

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def entitled_queues(draw: st.DrawFn) -> tuple[ClusterState, set[str]]:
    """Whole-node work only (so chips and nodes count the same), guarantees that sum to at
    most the capacity, and for each tenant a queue whose top-priority part fits in what is
    left of its guarantee; the rest of the queue borrows."""
    state = draw(states(whole=True))
    flavor = state.nodes[0].flavor
    chips = state.nodes[0].chips
    used: dict[str, int] = {}
    for a in state.running:
        if a.workload.flavor == flavor:
            used[a.workload.tenant] = used.get(a.workload.tenant, 0) + a.workload.chips
    pending: list[Workload] = []
    entitled: set[str] = set()
    for q in state.quotas:
        room = (q.guaranteed_chips.get(flavor, 0) - used.get(q.tenant, 0)) // chips
        sizes = draw(st.lists(st.integers(1, 3), max_size=3))
        for i, n in enumerate(sizes):
            if n > room:
                break
            room -= n
            w = Workload(f"g-{q.tenant}{i}", q.tenant, flavor, n, chips, priority=5)
            pending.append(w)
            entitled.add(w.id)
    extras = draw(st.lists(workloads(state.nodes, "x", whole=True), max_size=6))
    seen = {w.id for w in pending}
    for w in extras:
        if w.id not in seen:
            seen.add(w.id)
            pending.append(replace(w, kind="job"))
    return replace(state, pending=pending), entitled


@SETTINGS
@given(entitled_queues())
def test_work_inside_the_guarantee_starts_within_one_pass(
    case: tuple[ClusterState, set[str]],
) -> None:
    state, entitled = case
    scheduler = RainierScheduler()
    first = scheduler.schedule(state)
    check_all(state, first)
    admitted = {a.workload_id for a in first.admit}
    for w in first.wait:
        if w.workload_id in entitled:
            assert "held" in w.reason, w.reason
    later = apply(state, first, state.now_s + 31.0)
    second = scheduler.schedule(later)
    check_all(later, second)
    admitted |= {a.workload_id for a in second.admit}
    assert entitled <= admitted
