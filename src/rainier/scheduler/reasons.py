"""The sentences users read in `rainier get job`: every decision says why, in their words."""

from __future__ import annotations

import math

from rainier.scheduler.types import Workload


def shape(w: Workload) -> str:
    if w.nodes == 1:
        where = "on one node"
    else:
        where = f"({w.nodes} nodes x {w.chips_per_node})"
        if w.within is not None:
            where += f" in one {w.within}"
    return f"{w.chips} {w.flavor} chips {where}"


def at(t: float) -> str:
    return "never" if math.isinf(t) else f"t={t:.0f}"


def limit(n: int | None) -> str:
    return "unlimited" if n is None else str(n)


def in_guarantee(w: Workload, used: int, guaranteed: int) -> str:
    return (
        f"fits in the guarantee of tenant {w.tenant} "
        f"({w.flavor}: {used} of {guaranteed} guaranteed chips in use)"
    )


def borrows(w: Workload, chips: int, borrowed: int, allowed: int | None) -> str:
    return (
        f"borrows {chips} idle {w.flavor} chips, preemptible when owners reclaim "
        f"({w.flavor}: {borrowed} borrowed of {limit(allowed)} allowed)"
    )


def backfilled(w: Workload, end_s: float, holder: str, start_s: float) -> str:
    return (
        f"backfilled onto nodes reserved for {holder}: ends by {at(end_s)}, "
        f"before the reservation at {at(start_s)}"
    )


def over_limit(w: Workload, borrowed: int, allowed: int | None) -> str:
    return (
        f"over borrow limit ({w.flavor}: {borrowed} borrowed of {limit(allowed)} allowed, "
        f"needs {w.chips} more)"
    )


def not_preemptible(w: Workload, used: int, guaranteed: int) -> str:
    return (
        f"not preemptible, so it may run only inside the guarantee "
        f"({w.flavor}: {used} of {guaranteed} guaranteed chips in use, needs {w.chips})"
    )


def never_fits(w: Workload) -> str:
    return f"can never fit: no set of schedulable nodes offers {shape(w)}"


def reserved(w: Workload, start_s: float) -> str:
    return f"waiting for {shape(w)}; reservation at {at(start_s)}"


def no_estimate(w: Workload) -> str:
    return (
        f"waiting for {shape(w)}; no start time can be estimated "
        f"(the allocations it would need have no max_duration_s)"
    )


def behind(w: Workload, holder: str | None, start_s: float) -> str:
    if holder is None:
        return f"waiting for {shape(w)}: not enough free chips now"
    return (
        f"waiting for {shape(w)}: not enough free chips now that do not delay "
        f"the reservation of {holder} at {at(start_s)}"
    )


def preempting(w: Workload, victims: int, stopping: bool) -> str:
    if victims:
        return (
            f"waiting for {shape(w)}: preempted {victims} allocation(s) to make room; "
            f"nodes held for it until they stop"
        )
    if stopping:
        return f"waiting for {shape(w)}: stopping allocations are releasing its nodes; held"
    return f"waiting for {shape(w)}; held"


def reclaim(victim: Workload, claimant: Workload) -> str:
    return (
        f"preempted to reclaim guarantee of tenant {claimant.tenant} "
        f"({claimant.id} needs {claimant.chips} {claimant.flavor} chips)"
    )


def displaced(victim: Workload, claimant: Workload) -> str:
    return (
        f"preempted by higher-priority {claimant.id} (priority {claimant.priority} > "
        f"{victim.priority}) of the same tenant {claimant.tenant}"
    )
