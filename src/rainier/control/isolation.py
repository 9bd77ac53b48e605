"""A scheduling pass that one tenant's work makes fail still decides for everyone else.

When the scheduler raises on the cluster's state, the pass is tried again without each tenant's
pending work in turn; the tenant whose work the pass fails on has its pending workloads tried
one by one, and those that fail alone (or all of them, when none does) are set aside with the
error as their reason. The pass then runs on what is left. This costs extra passes only when a
pass failed, which bounds on every document's values make a matter of a bug, not of input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from rainier.scheduler import ClusterState, Decisions, Scheduler

log = logging.getLogger("rainier.reconciler")
MAX_ROUNDS = 8
MAX_TRIALS_PER_TENANT = 64


@dataclass
class Isolated:
    decisions: Decisions
    failed: dict[str, str] = field(default_factory=dict)  # workload id -> why


def _error(scheduler: Scheduler, state: ClusterState) -> str | None:
    try:
        scheduler.schedule(state)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def schedule_isolated(scheduler: Scheduler, state: ClusterState) -> Isolated:
    """The pass's decisions, having set aside the pending workloads it fails on."""
    failed: dict[str, str] = {}
    for _ in range(MAX_ROUNDS):
        try:
            return Isolated(scheduler.schedule(state), failed)
        except Exception as exc:
            whole = f"{type(exc).__name__}: {exc}"
        culprit = _culprit(scheduler, state)
        if culprit is None:
            break
        mine = [w for w in state.pending if w.tenant == culprit]
        others = [w for w in state.pending if w.tenant != culprit]
        alone = {
            w.id: error
            for w in mine[:MAX_TRIALS_PER_TENANT]
            if (error := _error(scheduler, replace(state, pending=[*others, w]))) is not None
        }
        failed.update(alone or dict.fromkeys((w.id for w in mine), whole))
        state = replace(state, pending=[w for w in state.pending if w.id not in failed])
        log.warning(
            "the scheduling pass failed on %d workload(s) of %s: %s", len(mine), culprit, whole
        )
    log.error("the scheduling pass fails whatever is set aside; deciding nothing this pass")
    return Isolated(Decisions(), failed)


def _culprit(scheduler: Scheduler, state: ClusterState) -> str | None:
    for tenant in sorted({w.tenant for w in state.pending}):
        without = replace(state, pending=[w for w in state.pending if w.tenant != tenant])
        if _error(scheduler, without) is None:
            return tenant
    return None
