"""The cluster as the scheduler sees it, read from the store.

The reconciler builds this state for every pass; a plan (`apply --dry-run`, the check at
submission) builds the very same one, so both get the policy's answer for the same facts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.control.stored import job_spec
from rainier.scheduler import Allocation, ClusterState, NodeInfo, Quota, Workload
from rainier.spec import ContractSpec
from rainier.spec_stored import load_stored
from rainier.store.lifecycle import LIVE_JOB_STATES, JobState
from rainier.store.tables import Contract, Job, Node, Tenant


def cluster_state(
    s: Session,
    now_s: float,
    workloads: dict[str, Workload] | None = None,
    reasons: dict[str, str] | None = None,
) -> ClusterState:
    """Nodes, the quotas of contracts in force, running and pending work at `now_s`.

    `workloads` caches parsed jobs between calls (a job's workload never changes once
    submitted); entries of jobs no longer active are dropped from it and from `reasons`."""
    cache = {} if workloads is None else workloads
    nodes = [
        NodeInfo(n.name, n.flavor, n.chips, n.zone, n.block, n.rack, n.schedulable)
        for n in s.scalars(select(Node).order_by(Node.name))
    ]
    now = datetime.fromtimestamp(now_s, UTC)
    contracts = s.scalars(
        select(Contract).where(Contract.term_start <= now, Contract.term_end > now)
    ).all()
    names = {t.id: t.name for t in s.scalars(select(Tenant))}
    quotas = quotas_of(contracts, names)
    running, pending = [], []
    columns = (
        Job.id,
        Job.tenant_id,
        Job.state,
        Job.started_at,
        Job.placement,
    )
    rows = s.execute(select(*columns).where(Job.state.in_(LIVE_JOB_STATES)).order_by(Job.id)).all()
    _cache_workloads(s, cache, reasons, [r.id for r in rows], names)
    for job in rows:
        workload = cache[job.id]
        if job.state == JobState.PENDING:
            pending.append(workload)
        elif job.placement:
            started = job.started_at.timestamp() if job.started_at else now_s
            stopping = job.state == JobState.STOPPING
            running.append(Allocation(workload, tuple(job.placement["nodes"]), started, stopping))
    return ClusterState(now_s, nodes, quotas, running, pending)


def _cache_workloads(
    s: Session,
    cache: dict[str, Workload],
    reasons: dict[str, str] | None,
    active: list[str],
    names: dict[str, str],
) -> None:
    """Workloads never change once submitted: parse each job's spec once, not every pass."""
    alive = set(active)
    for job_id in [j for j in cache if j not in alive]:
        del cache[job_id]
        if reasons is not None:
            reasons.pop(job_id, None)
    missing = [j for j in active if j not in cache]
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        for job in s.scalars(select(Job).where(Job.id.in_(chunk))):
            cache[job.id] = workload_of(job, names.get(job.tenant_id, job.tenant_id))


def quotas_of(contracts: Any, names: dict[str, str]) -> list[Quota]:
    """Every tenant's contracts in force, merged: guarantees and borrow limits add up."""
    merged: dict[str, dict[str, Any]] = {}
    for c in sorted(contracts, key=lambda c: c.name):
        entry = merged.setdefault(
            names.get(c.tenant_id, c.tenant_id),
            {"guaranteed": {}, "borrow": None, "weight": None, "tier": 0},
        )
        spec = load_stored(ContractSpec, c.spec)
        for flavor, chips in spec.guaranteed_chips.items():
            entry["guaranteed"][flavor] = entry["guaranteed"].get(flavor, 0) + chips
        if spec.borrow_limit_chips is not None:
            current = entry["borrow"] or {}
            for flavor, chips in spec.borrow_limit_chips.items():
                current[flavor] = current.get(flavor, 0) + chips
            entry["borrow"] = current
        entry["weight"] = spec.weight or entry["weight"]
        entry["tier"] = max(entry["tier"], spec.priority_tier)
    return [
        Quota(tenant, v["guaranteed"], v["borrow"], v["weight"], v["tier"])
        for tenant, v in sorted(merged.items())
    ]


def workload_of(job: Any, tenant: str) -> Workload:
    """`job` is a Job row or a result row with the same columns."""
    spec = job_spec(job)
    return Workload(
        id=job.id,
        tenant=tenant,
        flavor=job.flavor,
        nodes=job.nodes,
        chips_per_node=job.chips_per_node,
        priority=job.priority,
        kind="replica" if job.kind == "replica" else "job",
        within=spec.within,
        max_duration_s=spec.max_duration_s,
        submitted_s=job.created_at.timestamp(),
        preemptible=spec.preemptible,
        may_preempt_own=spec.may_preempt_own,
        grace_period_s=spec.grace_period_s,
    )
