from __future__ import annotations

from dataclasses import replace

import pytest

from rainier.scheduler import FirstFitScheduler, default_scheduler
from rainier.scheduler.types import (
    Admit,
    ClusterState,
    Decisions,
    Preempt,
    Workload,
)
from rainier.sim.engine import Simulation
from rainier.sim.metrics import summarize
from rainier.sim.model import Cluster, FlavorPool, TenantContract, Trace
from rainier.sim.records import DONE, UNPLACEABLE, PolicyError, SimConfig

from .conftest import cluster, job, random_gangs, run


class PreemptForUrgent:
    """First fit; asks `victim` to stop once as soon as `urgent` is pending."""

    def __init__(self, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self.stopping_seen: list[float] = []
        self.asked = False

    def schedule(self, state: ClusterState) -> Decisions:
        out = Decisions()
        free = {n.name: n.chips for n in state.nodes}
        for a in state.running:
            for name in a.node_names:
                free[name] -= a.workload.chips_per_node
            if a.stopping:
                self.stopping_seen.append(state.now_s)
        pending = {w.id for w in state.pending}
        running = {a.workload.id for a in state.running}
        if "urgent" in pending and "victim" in running and not self.asked:
            self.asked = True
            out.preempt.append(Preempt("victim", self.grace_s, "urgent work"))
        for w in sorted(state.pending, key=lambda w: (-w.priority, w.submitted_s)):
            fits = [
                n.name
                for n in state.nodes
                if n.flavor == w.flavor and free[n.name] >= w.chips_per_node
            ][: w.nodes]
            if len(fits) == w.nodes:
                for n in fits:
                    free[n] -= w.chips_per_node
                out.admit.append(Admit(w.id, tuple(fits), 0, "fits"))
        return out


def preemption_run(checkpoint_s: float | None, **config: object) -> dict[str, object]:
    jobs = [
        job("victim", 0, 1000, nodes=1, chips_per_node=8, checkpoint_interval_s=checkpoint_s),
        job("urgent", 700, 100, tenant="b", nodes=1, chips_per_node=8, priority=10),
        job("bystander", 710, 5, tenant="c", flavor="trn2"),
    ]
    policy = PreemptForUrgent()
    c = Cluster((FlavorPool("h200", 1, 8), FlavorPool("trn2", 1, 16)))
    sim = Simulation(c, Trace(jobs), policy, "scripted", SimConfig(**config))  # type: ignore[arg-type]
    result = sim.run()
    states = {js.job.id: js for js in result.jobs}
    return {"states": states, "policy": policy, "summary": summarize(result)}


def test_preempted_job_loses_the_work_since_its_last_checkpoint() -> None:
    out = preemption_run(checkpoint_s=300)
    victim, urgent = out["states"]["victim"], out["states"]["urgent"]  # type: ignore[index]
    seen = out["policy"].stopping_seen  # type: ignore[attr-defined]
    assert seen and all(700 < t < 730 for t in seen)
    assert victim.preemptions == 1
    assert victim.lost_chip_s == pytest.approx((730 - 600) * 8)
    assert urgent.first_start_s == pytest.approx(730)
    assert urgent.waited_s == pytest.approx(30)
    assert victim.end_s == pytest.approx(830 + (1000 - 600))
    assert victim.waited_s == pytest.approx(830 - 730)
    assert victim.held_s == pytest.approx(730 + 400)
    summary = out["summary"]
    assert summary["work_lost_chip_hours"] == pytest.approx(130 * 8 / 3600)  # type: ignore[index]
    assert summary["preemptions"] == 1  # type: ignore[index]


def test_without_checkpoints_the_whole_run_is_lost() -> None:
    victim = preemption_run(checkpoint_s=None)["states"]["victim"]  # type: ignore[index]
    assert victim.lost_chip_s == pytest.approx(730 * 8)
    assert victim.end_s == pytest.approx(830 + 1000)


def test_checkpoint_on_sigterm_loses_nothing() -> None:
    victim = preemption_run(checkpoint_s=300, sigterm_checkpoints=True)["states"]["victim"]  # type: ignore[index]
    assert victim.lost_chip_s == 0
    assert victim.end_s == pytest.approx(830 + 1000 - 730)


class Bad:
    def __init__(self, nodes: tuple[str, ...]) -> None:
        self.nodes = nodes

    def schedule(self, state: ClusterState) -> Decisions:
        return Decisions(admit=[Admit(w.id, self.nodes, 0, "bad") for w in state.pending])


@pytest.mark.parametrize(
    "nodes",
    [("nowhere",), ("h200-000000",), ("h200-000000", "h200-000000")],
    ids=["unknown node", "too few nodes", "same node twice"],
)
def test_impossible_decisions_are_policy_errors(nodes: tuple[str, ...]) -> None:
    jobs = [job("g", 0, 10, nodes=2, chips_per_node=8)]
    with pytest.raises(PolicyError, match="'g'"):
        Simulation(cluster(2, 8), Trace(jobs), Bad(nodes), "bad").run()


def test_overcommitting_a_node_is_a_policy_error() -> None:
    jobs = [job("x", 0, 10, chips_per_node=6), job("y", 0, 10, chips_per_node=6)]
    with pytest.raises(PolicyError, match="lacks 6 free h200 chips"):
        Simulation(cluster(1, 8), Trace(jobs), Bad(("h200-000000",)), "bad").run()


def test_jobs_that_fit_nowhere_are_counted_not_run() -> None:
    jobs = [job("huge", 0, 10, nodes=9, chips_per_node=8), job("ok", 0, 10)]
    result = run(cluster(4, 8), jobs, "fifo")
    states = {js.job.id: js.state for js in result.jobs}
    assert states == {"huge": UNPLACEABLE, "ok": DONE}
    assert summarize(result)["unplaceable"] == 1


def test_time_limit_ends_a_run() -> None:
    result = run(cluster(1, 8), [job("x", 0, 500, max_duration_s=100)], "fifo")
    (js,) = result.jobs
    assert js.timed_out and js.end_s == pytest.approx(100)


def test_tick_batches_scheduling() -> None:
    jobs = [job("a", 5, 10), job("b", 12, 10)]
    result = run(cluster(1, 8), jobs, "fifo", tick_s=10.0)
    starts = sorted(js.first_start_s for js in result.jobs)
    assert starts == [10.0, 20.0]


class GuaranteeFirst:
    """A minimal guarantee-honouring policy: evict borrowers' newest gangs for a short tenant."""

    def schedule(self, state: ClusterState) -> Decisions:
        guaranteed = {q.tenant: q.guaranteed_chips for q in state.quotas}
        held: dict[str, int] = {}
        free = {n.name: n.chips for n in state.nodes}
        for a in state.running:
            for name in a.node_names:
                free[name] -= a.workload.chips_per_node
            if not a.stopping:
                held[a.workload.tenant] = held.get(a.workload.tenant, 0) + a.workload.chips
        out = Decisions()

        def borrows(w: Workload) -> bool:
            return held.get(w.tenant, 0) + w.chips > guaranteed.get(w.tenant, {}).get(w.flavor, 0)

        for w in sorted(state.pending, key=lambda w: (borrows(w), w.submitted_s)):
            fits = [n for n, c in free.items() if c >= w.chips_per_node][: w.nodes]
            if len(fits) == w.nodes:
                for n in fits:
                    free[n] -= w.chips_per_node
                held[w.tenant] = held.get(w.tenant, 0) + w.chips
                out.admit.append(Admit(w.id, tuple(fits), 0, "fits"))
                continue
            own = guaranteed.get(w.tenant, {}).get(w.flavor, 0)
            if held.get(w.tenant, 0) + w.chips > own:
                continue
            need = w.chips
            for a in sorted(state.running, key=lambda a: -a.started_s):
                t = a.workload.tenant
                borrowing = held.get(t, 0) > guaranteed.get(t, {}).get(w.flavor, 0)
                if need > 0 and not a.stopping and borrowing:
                    out.preempt.append(Preempt(a.workload.id, a.workload.grace_period_s, "owed"))
                    held[t] -= a.workload.chips
                    need -= a.workload.chips
            held[w.tenant] = held.get(w.tenant, 0) + w.chips
        return out


def contended() -> tuple[object, list[object]]:
    tenants = [
        TenantContract("a", {"h200": 16}),
        TenantContract("b", {"h200": 16}),
    ]
    jobs = [job(f"b{i}", i, 5000, tenant="b", chips_per_node=8) for i in range(4)]
    jobs += [job(f"a{i}", 100 + i, 600, tenant="a", chips_per_node=8) for i in range(2)]
    jobs += [job(f"b-late{i}", 200 + i, 300, tenant="b", chips_per_node=8) for i in range(3)]
    return cluster(4, 8, tenants), jobs


def test_guarantee_violations_are_detected_and_a_guarantee_policy_has_none() -> None:
    c, jobs = contended()
    fifo = summarize(run(c, jobs, "fifo"))  # type: ignore[arg-type]
    assert fifo["guarantee_violations"] >= 1
    assert fifo["tenants"]["a"]["guarantee_violations"] >= 1
    assert fifo["tenants"]["b"]["guarantee_violations"] == 0
    assert fifo["tenants"]["a"]["entitlement_served"]["h200"] < 0.2
    assert fifo["tenants"]["b"]["entitlement_served"]["h200"] == 1.0
    assert fifo["fairness_jain"] < 0.7
    fair = Simulation(c, Trace(jobs), GuaranteeFirst(), "guarantee-first").run()  # type: ignore[arg-type]
    s = summarize(fair)
    assert s["guarantee_violations"] == 0
    assert s["tenants"]["a"]["entitlement_served"]["h200"] > 0.9
    assert s["fairness_jain"] > 0.99
    assert s["preemptions"] >= 2
    assert s["completed"] == len(jobs)


@pytest.mark.xfail(
    isinstance(default_scheduler(), FirstFitScheduler),
    reason="the first-fit placeholder neither guarantees nor preempts",
    strict=True,
)
def test_rainier_policy_serves_every_guarantee() -> None:
    c, jobs = contended()
    s = summarize(run(c, jobs, "rainier"))  # type: ignore[arg-type]
    assert s["completed"] == len(jobs)
    assert s["guarantee_violations"] == 0


@pytest.mark.parametrize("policy", ["rainier", "backfill"])
def test_same_trace_same_results(policy: str) -> None:
    c, _ = contended()
    jobs = random_gangs(300, seed=12, tenants=2)
    jobs = [replace(j, tenant="a" if j.tenant == "t0" else "b") for j in jobs]

    def outcome() -> list[tuple[float, float, int]]:
        result = run(c, jobs, policy)  # type: ignore[arg-type]
        return [(js.first_start_s, js.end_s, js.preemptions) for js in result.jobs]

    first = outcome()
    assert outcome() == first
    assert all(end > 0 for _, end, _ in first)


def test_many_instant_jobs_at_one_instant_are_not_a_livelock() -> None:
    jobs = [job(f"z{i}", 0, 0) for i in range(12_000)]
    result = run(cluster(1, 1), jobs, "fifo")
    assert all(js.state == DONE and js.end_s == 0 for js in result.jobs)


class Flapping:
    """Stops whatever runs, with no grace, and starts something else: time never moves."""

    def schedule(self, state: ClusterState) -> Decisions:
        used = {name for a in state.running for name in a.node_names}
        free = [n.name for n in state.nodes if n.name not in used]
        return Decisions(
            preempt=[Preempt(a.workload.id, 0, "flap") for a in state.running if not a.stopping],
            admit=[
                Admit(w.id, (node,), 0, "flap")
                for w, node in zip(state.pending, free, strict=False)
            ],
        )


def test_a_policy_that_never_lets_time_pass_is_stopped() -> None:
    jobs = [job("a", 0, 10), job("b", 1, 10)]
    with pytest.raises(PolicyError, match="without end"):
        Simulation(cluster(2, 1), Trace(jobs), Flapping(), "flapping").run()
