"""The scheduler's inputs and outputs: plain, immutable data.

The live reconciler and the simulator both build a `ClusterState` and call `schedule()`; neither
the scheduler nor these types know about databases, clocks or processes. Times are seconds on
whatever clock the caller uses (wall clock live, simulated time in the simulator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

TopologyLevel = Literal["zone", "block", "rack"]
WorkloadKind = Literal["job", "replica"]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    flavor: str
    chips: int
    zone: str = ""
    block: str = ""
    rack: str = ""
    schedulable: bool = True


@dataclass(frozen=True, slots=True)
class Quota:
    """What a tenant's active contract entitles it to, per flavor."""

    tenant: str
    guaranteed_chips: Mapping[str, int] = field(default_factory=dict)
    borrow_limit_chips: Mapping[str, int] | None = None  # None: may borrow without limit
    weight: float | None = None  # share of idle chips; None: proportional to the guarantee
    priority_tier: int = 0


@dataclass(frozen=True, slots=True)
class Workload:
    """A gang to place: `nodes` tasks on distinct nodes, `chips_per_node` chips each."""

    id: str
    tenant: str
    flavor: str
    nodes: int = 1
    chips_per_node: int = 1
    priority: int = 0
    kind: WorkloadKind = "job"
    within: TopologyLevel | None = None
    max_duration_s: float | None = None
    submitted_s: float = 0.0
    preemptible: bool = True
    may_preempt_own: bool = False
    grace_period_s: float = 30.0

    @property
    def chips(self) -> int:
        return self.nodes * self.chips_per_node


@dataclass(frozen=True, slots=True)
class Allocation:
    """A running gang and where it runs. `stopping` means a preemption was already requested."""

    workload: Workload
    node_names: tuple[str, ...]
    started_s: float
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class ClusterState:
    now_s: float
    nodes: Sequence[NodeInfo]
    quotas: Sequence[Quota]
    running: Sequence[Allocation]
    pending: Sequence[Workload]


@dataclass(frozen=True, slots=True)
class Admit:
    workload_id: str
    node_names: tuple[str, ...]
    borrowed_chips: int
    reason: str


@dataclass(frozen=True, slots=True)
class Preempt:
    workload_id: str
    grace_period_s: float
    reason: str


class WaitCause(StrEnum):
    """Why a workload waits, for callers that act on it (a refused submission, a plan)."""

    CAPACITY = "capacity"  # not enough free chips now; no promise when
    RESERVED = "reserved"  # holds its flavor's reservation: starts by `reservation_s`
    PREEMPTING = "preempting"  # others are being preempted to make room for it
    OVER_LIMIT = "over-borrow-limit"  # its tenant may not borrow that many more chips
    NOT_PREEMPTIBLE = "not-preemptible"  # would have to borrow, which needs preemptible work
    NEVER_FITS = "never-fits"  # no set of the flavor's nodes offers its shape, even empty


@dataclass(frozen=True, slots=True)
class Wait:
    workload_id: str
    reason: str
    reservation_s: float | None = None
    cause: WaitCause = WaitCause.CAPACITY


@dataclass(frozen=True, slots=True)
class Decisions:
    admit: list[Admit] = field(default_factory=list)
    preempt: list[Preempt] = field(default_factory=list)
    wait: list[Wait] = field(default_factory=list)


class Scheduler(Protocol):
    """Anything that turns a cluster state into decisions: rainier's policy and the baselines."""

    def schedule(self, state: ClusterState) -> Decisions: ...
