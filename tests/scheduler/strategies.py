"""Random clusters, contracts and queues for property tests, and a tiny pass-by-pass simulator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hypothesis import strategies as st

from rainier.scheduler.types import (
    Allocation,
    ClusterState,
    Decisions,
    NodeInfo,
    Quota,
    Workload,
)

FLAVORS = ("h200", "trn2")
TENANTS = ("a", "b", "c")


@st.composite
def clusters(draw: st.DrawFn, whole_chips: int | None = None) -> list[NodeInfo]:
    nodes: list[NodeInfo] = []
    flavors = draw(st.lists(st.sampled_from(FLAVORS), min_size=1, max_size=2, unique=True))
    for flavor in flavors:
        chips = whole_chips or draw(st.sampled_from((4, 8)))
        for z in range(draw(st.integers(1, 2))):
            for b in range(draw(st.integers(1, 3))):
                for r in range(draw(st.integers(1, 2))):
                    for n in range(draw(st.integers(1, 3))):
                        schedulable = whole_chips is not None or draw(st.integers(0, 9)) > 0
                        nodes.append(
                            NodeInfo(
                                name=f"{flavor}-{z}{b}{r}{n}",
                                flavor=flavor,
                                chips=chips,
                                zone=f"z{z}",
                                block=f"b{b}",
                                rack=f"r{r}",
                                schedulable=schedulable,
                            )
                        )
    return nodes


def capacity(nodes: Sequence[NodeInfo]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        if n.schedulable:
            out[n.flavor] = out.get(n.flavor, 0) + n.chips
    return out


@st.composite
def quotas(draw: st.DrawFn, nodes: Sequence[NodeInfo], step: int = 1) -> list[Quota]:
    flavors = sorted({n.flavor for n in nodes})
    left = {f: capacity(nodes).get(f, 0) for f in flavors}
    tenants = draw(st.integers(1, len(TENANTS)))
    out = []
    for t in TENANTS[:tenants]:
        guaranteed = {}
        for f in flavors:
            g = draw(st.integers(0, left[f] // step)) * step
            left[f] -= g
            guaranteed[f] = g
        limit = draw(
            st.one_of(
                st.none(),
                st.dictionaries(st.sampled_from(flavors), st.integers(0, 16), max_size=2),
            )
        )
        weight = draw(st.one_of(st.none(), st.floats(0.5, 4.0)))
        out.append(Quota(t, guaranteed, limit, weight, draw(st.integers(0, 1))))
    return out


@st.composite
def workloads(
    draw: st.DrawFn, nodes: Sequence[NodeInfo], prefix: str, whole: bool = False
) -> Workload:
    flavor = draw(st.sampled_from(sorted({n.flavor for n in nodes})))
    chips = max(n.chips for n in nodes if n.flavor == flavor)
    return Workload(
        id=f"{prefix}{draw(st.integers(0, 10**6))}",
        tenant=draw(st.sampled_from(TENANTS)),
        flavor=flavor,
        nodes=draw(st.integers(1, 3)),
        chips_per_node=chips if whole else draw(st.integers(1, chips)),
        priority=draw(st.integers(0, 3)),
        kind=draw(st.sampled_from(("job", "job", "replica"))),
        within=None if whole else draw(st.sampled_from((None, None, "rack", "block", "zone"))),
        max_duration_s=draw(st.one_of(st.none(), st.integers(10, 500).map(float))),
        submitted_s=float(draw(st.integers(0, 5))),
        preemptible=whole or draw(st.integers(0, 4)) > 0,
        may_preempt_own=not whole and draw(st.booleans()),
        grace_period_s=float(draw(st.integers(0, 30))),
    )


def place_first_fit(
    nodes: Sequence[NodeInfo], running: Sequence[Allocation], w: Workload
) -> tuple[str, ...] | None:
    """Where a test puts pre-existing work: the first nodes with room, no policy."""
    used = usage(nodes, running)
    fits = [
        n.name
        for n in nodes
        if n.schedulable and n.flavor == w.flavor and n.chips - used[n.name] >= w.chips_per_node
    ]
    return tuple(fits[: w.nodes]) if len(fits) >= w.nodes else None


def usage(nodes: Sequence[NodeInfo], running: Sequence[Allocation]) -> dict[str, int]:
    used = {n.name: 0 for n in nodes}
    for a in running:
        for name in a.node_names:
            used[name] += a.workload.chips_per_node
    return used


@st.composite
def states(draw: st.DrawFn, whole: bool = False) -> ClusterState:
    nodes = draw(clusters(whole_chips=4 if whole else None))
    qs = draw(quotas(nodes, step=4 if whole else 1))
    running: list[Allocation] = []
    seen: set[str] = set()
    for w in draw(st.lists(workloads(nodes, "r", whole), max_size=12)):
        if w.id in seen:
            continue
        seen.add(w.id)
        where = place_first_fit(nodes, running, w)
        if where is not None:
            started = -float(draw(st.integers(0, 100)))
            stopping = not whole and draw(st.integers(0, 5)) == 0
            running.append(Allocation(w, where, started, stopping))
    pending = []
    for w in draw(st.lists(workloads(nodes, "p", whole), max_size=10)):
        if w.id not in seen:
            seen.add(w.id)
            pending.append(w)
    return ClusterState(0.0, nodes, qs, running, pending)


def apply(state: ClusterState, decisions: Decisions, now_s: float) -> ClusterState:
    """The next state as the reconciler would see it at `now_s`: admitted work runs, preempted
    work stops and leaves after its grace period, finished work leaves."""
    by_id = {w.id: w for w in state.pending}
    running = list(state.running)
    stop = {p.workload_id for p in decisions.preempt}
    running = [replace(a, stopping=True) if a.workload.id in stop else a for a in running]
    for a in decisions.admit:
        running.append(Allocation(by_id.pop(a.workload_id), a.node_names, state.now_s))
    running = [a for a in running if end_of(a, state.now_s) > now_s]
    return ClusterState(now_s, state.nodes, state.quotas, running, list(by_id.values()))


def end_of(a: Allocation, stopped_at: float) -> float:
    w = a.workload
    end = float("inf") if w.max_duration_s is None else a.started_s + w.max_duration_s
    if a.stopping:
        end = min(end, stopped_at + w.grace_period_s)
    return end
