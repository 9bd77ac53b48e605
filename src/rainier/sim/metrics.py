"""What a provider reads off a run: delays, utilization, lost work, guarantees, fairness, money.

Definitions, all over jobs that completed unless said otherwise:

* JCT: completion minus submission. Queueing delay ("wait"): all the time a job spent pending,
  including the time back in the queue after each preemption.
* Utilization of a flavor: busy chips (running or stopping) over its chips, time-averaged over
  [0, end of the run], and over the arrival window (first to last submission), which is what a
  planner compares with the offered load: a trace's tail of long jobs drains at low load.
* Work lost to preemption: chip-seconds a job ran since its last checkpoint before it was stopped,
  which it must redo.
* Guarantee violation: a tenant T "is short" of flavor f while it has a pending job of f that
  fits in what is left of its guarantee (chips T holds in f, not counting gangs being stopped,
  plus that job's chips <= T's guaranteed chips of f). A stretch of being short ends when T is no
  longer short or when T is given more chips of f (it is being served). A correct policy may need
  one grace period to evict borrowers, so a stretch is a violation only if it lasts longer than
  the allowance: the longest grace period in the trace plus the scheduling tick. Reported as the
  number of such stretches and the seconds they ran past the allowance. Contracts that guarantee
  more chips than the cluster has show up here, as they should.
* Entitlement served: for a tenant and a flavor it holds a guarantee of, what it received over
  what it deserved, each integrated over the run: deserved = min(chips held + chips of its
  waiting jobs, guarantee), received = min(chips held, guarantee). A tenant that asks for nothing
  is owed nothing, and chips borrowed beyond the guarantee do not make up for a shortfall.
* Fairness: Jain's index of the entitlement served over guaranteed (tenant, flavor) pairs that
  deserved anything: 1.0 when every tenant got the same fraction of its due, 1/n when one got all
  of its due and the others none.
* Money: chip-hours held per tenant and flavor (a preempted gang's grace period included) at the
  flavor's list price, less the contract's discount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np

from rainier.catalog import FLAVORS
from rainier.sim.records import DONE, PENDING, RUNNING, STOPPING, UNPLACEABLE, SimResult, Timeline

STATS = ("mean", "p50", "p95", "p99")


def distribution(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return dict.fromkeys(STATS)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def time_average(tl: Timeline, end_s: float) -> float:
    t = np.frombuffer(tl.time_s, dtype=np.float64)
    v = np.frombuffer(tl.value, dtype=np.float64)
    if t.size == 0 or end_s <= 0:
        return 0.0
    widths = np.diff(np.append(t, max(end_s, float(t[-1]))))
    return float((v * widths).sum() / end_s)


def window_average(tl: Timeline, start_s: float, end_s: float) -> float:
    """Time average over [start_s, end_s]; 0 for an empty window."""
    if end_s <= start_s:
        return 0.0
    grid = np.linspace(start_s, end_s, 2001)
    return float(sample(tl, grid[:-1]).mean())


def sample(tl: Timeline, grid: np.ndarray) -> np.ndarray:
    """The step function's value at each grid time."""
    t = np.frombuffer(tl.time_s, dtype=np.float64)
    v = np.frombuffer(tl.value, dtype=np.float64)
    if t.size == 0:
        return np.zeros_like(grid)
    idx = np.searchsorted(t, grid, side="right") - 1
    return np.where(idx >= 0, v[np.clip(idx, 0, None)], 0.0)


def timeline(result: SimResult, points: int = 100) -> dict[str, list[float]]:
    """Utilization per flavor and queue length, sampled evenly: enough to redraw the charts."""
    grid = np.linspace(0.0, max(result.end_s, 1.0), points)
    out = {"t_s": [round(float(t), 3) for t in grid]}
    for flavor, tl in result.utilization.items():
        busy = sample(tl, grid) / result.capacity_chips[flavor]
        out[f"utilization_{flavor}"] = [round(float(u), 4) for u in busy]
    out["queue_length"] = [float(q) for q in sample(result.queue_length, grid)]
    return out


@dataclass(frozen=True, slots=True)
class JobTable:
    """Completed jobs as columns, so every statistic is one numpy expression."""

    tenant: np.ndarray
    jct_s: np.ndarray
    wait_s: np.ndarray


def job_table(result: SimResult) -> JobTable:
    done = [js for js in result.jobs if js.state == DONE]
    return JobTable(
        tenant=np.array([js.job.tenant for js in done], dtype=object),
        jct_s=np.array([js.end_s - js.job.submit_s for js in done], dtype=np.float64),
        wait_s=np.array([js.waited_s for js in done], dtype=np.float64),
    )


def _money(usd: Decimal) -> str:
    return str(usd.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def jain(xs: list[float]) -> float | None:
    if not xs:
        return None
    total, squares = sum(xs), sum(x * x for x in xs)
    return 1.0 if squares == 0 else total * total / (len(xs) * squares)


def summarize(result: SimResult) -> dict[str, Any]:
    jobs = result.jobs
    table = job_table(result)
    end_s = result.end_s
    first_submit = min((js.job.submit_s for js in jobs), default=0.0)
    last_submit = max((js.job.submit_s for js in jobs), default=0.0)
    last_end = max((js.end_s for js in jobs if js.state == DONE), default=first_submit)
    states = [js.state for js in jobs]
    cluster = result.cluster
    contracts = {t.tenant: t for t in cluster.tenants}
    tenants = sorted({js.job.tenant for js in jobs} | set(contracts))

    allowance = result.guarantee_allowance_s
    violations: dict[str, dict[str, float]] = {
        t: {"count": 0, "seconds": 0.0, "short_seconds": 0.0} for t in tenants
    }
    for ep in result.guarantee_episodes:
        length = ep.end_s - ep.start_s
        v = violations[ep.tenant]
        v["short_seconds"] += length
        if length > allowance + 1e-9:
            v["count"] += 1
            v["seconds"] += length - allowance

    by_tenant: dict[str, list[Any]] = {t: [] for t in tenants}
    for js in jobs:
        by_tenant[js.job.tenant].append(js)
    per_tenant: dict[str, Any] = {}
    fairness_x: list[float] = []
    billed_total = Decimal(0)
    for tenant in tenants:
        mask = table.tenant == tenant
        contract = contracts.get(tenant)
        discount = contract.discount if contract else Decimal(0)
        chip_hours: dict[str, float] = {}
        served: dict[str, float] = {}
        usd = Decimal(0)
        for flavor in result.capacity_chips:
            held = result.tenant_chip_s.get((tenant, flavor), 0.0)
            if held:
                chip_hours[flavor] = held / 3600
                price = FLAVORS[flavor].list_usd_per_chip_hour
                usd += Decimal(repr(held / 3600)) * price * (1 - discount)
            deserved, received = result.entitlement.get((tenant, flavor), (0.0, 0.0))
            if deserved > 0:
                fairness_x.append(received / deserved)
                served[flavor] = received / deserved
        billed_total += usd
        tenant_jobs = by_tenant[tenant]
        per_tenant[tenant] = {
            "jobs": len(tenant_jobs),
            "completed": int(mask.sum()),
            "jct_s": distribution(table.jct_s[mask]),
            "wait_s": distribution(table.wait_s[mask]),
            "preemptions": sum(js.preemptions for js in tenant_jobs),
            "work_lost_chip_hours": sum(js.lost_chip_s for js in tenant_jobs) / 3600,
            "guaranteed_chips": dict(contract.guaranteed_chips) if contract else {},
            "entitlement_served": served,
            "mean_chips_held": {
                f: result.tenant_chip_s.get((tenant, f), 0.0) / end_s if end_s else 0.0
                for f in result.capacity_chips
            },
            "chip_hours": chip_hours,
            "billed_usd": _money(usd),
            "discount": str(discount),
            "guarantee_violations": int(violations[tenant]["count"]),
            "guarantee_violation_s": violations[tenant]["seconds"],
        }

    return {
        "policy": result.policy,
        "jobs": len(jobs),
        "completed": states.count(DONE),
        "unplaceable": states.count(UNPLACEABLE),
        "unfinished": sum(1 for s in states if s in (PENDING, RUNNING, STOPPING)),
        "timed_out": sum(1 for js in jobs if js.state == DONE and js.timed_out),
        "jct_s": distribution(table.jct_s),
        "wait_s": distribution(table.wait_s),
        "makespan_s": last_end - first_submit,
        "utilization": {
            f: time_average(tl, end_s) / result.capacity_chips[f]
            for f, tl in result.utilization.items()
        },
        "utilization_while_arriving": {
            f: window_average(tl, first_submit, last_submit) / result.capacity_chips[f]
            for f, tl in result.utilization.items()
        },
        "mean_queue_length": time_average(result.queue_length, end_s),
        "timeline": timeline(result),
        "preemptions": sum(js.preemptions for js in jobs),
        "work_lost_chip_hours": sum(js.lost_chip_s for js in jobs) / 3600,
        "guarantee_violations": sum(int(v["count"]) for v in violations.values()),
        "guarantee_violation_s": sum(v["seconds"] for v in violations.values()),
        "guarantee_allowance_s": allowance,
        "fairness_jain": jain(fairness_x),
        "billed_usd": _money(billed_total),
        "tenants": per_tenant,
        "events": result.events,
        "scheduler_calls": result.scheduler_calls,
        "wall_s": result.wall_s,
        "events_per_s": result.events / result.wall_s if result.wall_s > 0 else math.inf,
    }
