"""What a simulation run keeps: each job's state and history, the step functions of chips in
use and queue length, the stretches a guarantee went unserved, and the run's settings."""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from rainier.scheduler.types import Workload
from rainier.sim.model import Cluster, TraceJob

PENDING, RUNNING, STOPPING, DONE, UNPLACEABLE = range(5)
SortKey = tuple[int, float, int]
QueueKey = tuple[str, str]


class PolicyError(RuntimeError):
    """The scheduler under test returned a decision that cannot be carried out."""


@dataclass(slots=True)
class SimJobState:
    job: TraceJob
    workload: Workload
    index: int
    key: SortKey
    queue: QueueKey
    chips: int
    state: int = PENDING
    saved_s: float = 0.0
    first_start_s: float = math.nan
    run_start_s: float = math.nan
    end_s: float = math.nan
    pending_since_s: float = 0.0
    waited_s: float = 0.0
    held_s: float = 0.0
    generation: int = 0
    node_ids: tuple[int, ...] = ()
    preemptions: int = 0
    lost_chip_s: float = 0.0
    timed_out: bool = False
    reservation_s: float = math.inf


@dataclass(slots=True)
class Timeline:
    """A step function recorded at each change: value[i] holds from time[i] to time[i+1]."""

    time_s: array = field(default_factory=lambda: array("d"))
    value: array = field(default_factory=lambda: array("d"))

    def record(self, t: float, v: float) -> None:
        if self.time_s and self.time_s[-1] == t:
            self.value[-1] = v
        else:
            self.time_s.append(t)
            self.value.append(v)


@dataclass(slots=True)
class GuaranteeEpisode:
    """A stretch during which a tenant had pending work that fitted in its unserved guarantee."""

    tenant: str
    flavor: str
    start_s: float
    end_s: float


@dataclass(slots=True)
class SimConfig:
    queue_window: int | None = 256
    tick_s: float = 0.0
    sigterm_checkpoints: bool = False
    record_reservations: bool = False
    skip_when_full: bool = False


@dataclass(slots=True)
class SimResult:
    policy: str
    cluster: Cluster
    jobs: list[SimJobState]
    utilization: dict[str, Timeline]
    capacity_chips: dict[str, int]
    queue_length: Timeline
    tenant_chip_s: dict[tuple[str, str], float]
    guarantee_episodes: list[GuaranteeEpisode]
    guarantee_allowance_s: float
    entitlement: dict[tuple[str, str], tuple[float, float]]
    events: int
    scheduler_calls: int
    wall_s: float
    end_s: float
