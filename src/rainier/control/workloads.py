"""The scheduler's view of stored rows: a tenant's contracts merged into one quota, a job row as
a workload. Read from the specs as stored; `rainier.spec` bounds every value they hold."""

from __future__ import annotations

from typing import Any

from rainier.scheduler import Quota, Workload


def quotas_of(contracts: Any, names: dict[str, str]) -> list[Quota]:
    merged: dict[str, dict[str, Any]] = {}
    for c in sorted(contracts, key=lambda c: c.name):
        entry = merged.setdefault(
            names.get(c.tenant_id, c.tenant_id),
            {"guaranteed": {}, "borrow": None, "weight": None, "tier": 0},
        )
        for flavor, chips in c.spec.get("guaranteed_chips", {}).items():
            entry["guaranteed"][flavor] = entry["guaranteed"].get(flavor, 0) + int(chips)
        borrow = c.spec.get("borrow_limit_chips")
        if borrow is not None:
            current = entry["borrow"] or {}
            for flavor, chips in borrow.items():
                current[flavor] = current.get(flavor, 0) + int(chips)
            entry["borrow"] = current
        entry["weight"] = c.spec.get("weight") or entry["weight"]
        entry["tier"] = max(entry["tier"], int(c.spec.get("priority_tier", 0)))
    return [
        Quota(tenant, v["guaranteed"], v["borrow"], v["weight"], v["tier"])
        for tenant, v in sorted(merged.items())
    ]


def workload_of(job: Any, tenant: str) -> Workload:
    """`job` is a Job row or a result row with the same columns."""
    spec = job.spec
    return Workload(
        id=job.id,
        tenant=tenant,
        flavor=job.flavor,
        nodes=job.nodes,
        chips_per_node=job.chips_per_node,
        priority=job.priority,
        kind="replica" if job.kind == "replica" else "job",
        within=spec.get("within"),
        max_duration_s=spec.get("max_duration_s"),
        submitted_s=job.created_at.timestamp(),
        preemptible=bool(spec.get("preemptible", True)),
        may_preempt_own=bool(spec.get("may_preempt_own", False)),
        grace_period_s=float(spec.get("grace_period_s", 30.0)),
    )
