"""What every pass must respect, whatever the policy's choices: checked on random states."""

from __future__ import annotations

from collections import defaultdict

from rainier.scheduler.types import Allocation, ClusterState, Decisions, NodeInfo, Workload

LEVELS = ("zone", "block", "rack")


def group_of(node: NodeInfo, level: str) -> tuple[str, ...]:
    path = (node.zone, node.block, node.rack)
    return path[: LEVELS.index(level) + 1]


def check_all(state: ClusterState, d: Decisions) -> None:
    check_one_decision_each(state, d)
    check_gangs(state, d)
    check_no_overcommit(state, d)
    check_borrow_limits(state, d)
    check_preemptions(state, d)


def check_one_decision_each(state: ClusterState, d: Decisions) -> None:
    decided = [a.workload_id for a in d.admit] + [w.workload_id for w in d.wait]
    assert sorted(decided) == sorted(w.id for w in state.pending)
    for decision in (*d.admit, *d.wait, *d.preempt):
        assert decision.reason.strip()


def check_gangs(state: ClusterState, d: Decisions) -> None:
    nodes = {n.name: n for n in state.nodes}
    pending = {w.id: w for w in state.pending}
    for a in d.admit:
        w = pending[a.workload_id]
        assert len(a.node_names) == w.nodes
        assert len(set(a.node_names)) == w.nodes
        for name in a.node_names:
            assert nodes[name].schedulable
            assert nodes[name].flavor == w.flavor
        if w.within is not None:
            assert len({group_of(nodes[n], w.within) for n in a.node_names}) == 1


def check_no_overcommit(state: ClusterState, d: Decisions) -> None:
    used: dict[str, int] = defaultdict(int)
    for alloc in state.running:
        for name in alloc.node_names:
            used[name] += alloc.workload.chips_per_node
    pending = {w.id: w for w in state.pending}
    for a in d.admit:
        for name in a.node_names:
            used[name] += pending[a.workload_id].chips_per_node
    for n in state.nodes:
        before = sum(a.workload.chips_per_node for a in state.running if n.name in a.node_names)
        assert used[n.name] <= max(n.chips, before), n.name


def committed_after(state: ClusterState, d: Decisions) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    stop = {p.workload_id for p in d.preempt}
    for a in state.running:
        if not a.stopping and a.workload.id not in stop:
            out[(a.workload.tenant, a.workload.flavor)] += chips(a)
    pending = {w.id: w for w in state.pending}
    for adm in d.admit:
        w = pending[adm.workload_id]
        out[(w.tenant, w.flavor)] += w.chips
    return out


def chips(a: Allocation) -> int:
    return a.workload.chips_per_node * len(a.node_names)


def check_borrow_limits(state: ClusterState, d: Decisions) -> None:
    quotas = {q.tenant: q for q in state.quotas}
    pending = {w.id: w for w in state.pending}
    final = committed_after(state, d)
    for adm in d.admit:
        w = pending[adm.workload_id]
        assert adm.borrowed_chips >= 0
        if adm.borrowed_chips == 0:
            continue
        assert w.preemptible, "borrowed work must be preemptible"
        q = quotas.get(w.tenant)
        if q is None or q.borrow_limit_chips is None:
            continue
        g = q.guaranteed_chips.get(w.flavor, 0)
        allowed = q.borrow_limit_chips.get(w.flavor, 0)
        assert final[(w.tenant, w.flavor)] - g <= allowed


def borrowed_budget(state: ClusterState) -> dict[tuple[str, str], int]:
    """Chips each tenant holds beyond its guarantee before the pass (stopping work excluded)."""
    quotas = {q.tenant: q for q in state.quotas}
    out: dict[tuple[str, str], int] = defaultdict(int)
    for a in state.running:
        if not a.stopping:
            out[(a.workload.tenant, a.workload.flavor)] += chips(a)
    for (tenant, flavor), used in out.items():
        q = quotas.get(tenant)
        out[(tenant, flavor)] = used - (q.guaranteed_chips.get(flavor, 0) if q else 0)
    return out


def victim_rank(a: Allocation) -> tuple[int, float, str]:
    return (a.workload.priority, -a.started_s, a.workload.id)


def check_preemptions(state: ClusterState, d: Decisions) -> None:
    """Reclaim takes only borrowed work: ranked for preemption, each victim's tenant is still
    over its guarantee once the victims ahead of it are gone. Own-tenant preemption takes only
    lower-priority work, for a workload allowed to."""
    running = {a.workload.id: a for a in state.running}
    budget = borrowed_budget(state)
    reclaimed: dict[tuple[str, str], list[Allocation]] = defaultdict(list)
    for p in d.preempt:
        a = running[p.workload_id]
        assert not a.stopping
        assert a.workload.preemptible
        assert p.grace_period_s == a.workload.grace_period_s
        if "reclaim" in p.reason:
            reclaimed[(a.workload.tenant, a.workload.flavor)].append(a)
    assert len({p.workload_id for p in d.preempt}) == len(d.preempt)
    for key, victims in reclaimed.items():
        ahead = 0
        for a in sorted(victims, key=victim_rank):
            assert ahead < budget[key], f"{a.workload.id} was inside the guarantee of {key}"
            ahead += chips(a)


def own_preemptions_ok(state: ClusterState, d: Decisions, claimants: dict[str, Workload]) -> None:
    running = {a.workload.id: a for a in state.running}
    for p in d.preempt:
        if "same tenant" in p.reason:
            victim = running[p.workload_id].workload
            assert any(
                c.tenant == victim.tenant and c.may_preempt_own and c.priority > victim.priority
                for c in claimants.values()
            )
