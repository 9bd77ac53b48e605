"""Pure scheduling core: cluster state in, decisions out (no I/O, no clock, no database)."""

from rainier.scheduler.firstfit import FirstFitScheduler
from rainier.scheduler.policy import RainierScheduler
from rainier.scheduler.types import (
    Admit,
    Allocation,
    ClusterState,
    Decisions,
    NodeInfo,
    Preempt,
    Quota,
    Scheduler,
    Wait,
    Workload,
)

__all__ = [
    "Admit",
    "Allocation",
    "ClusterState",
    "Decisions",
    "FirstFitScheduler",
    "NodeInfo",
    "Preempt",
    "Quota",
    "RainierScheduler",
    "Scheduler",
    "Wait",
    "Workload",
    "default_scheduler",
]


def default_scheduler() -> Scheduler:
    """The policy the live control plane uses."""
    return RainierScheduler()
