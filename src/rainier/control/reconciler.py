"""The reconciler: moves the cluster from the state it observes toward the state users asked for.

One numbered loop calls a small handler per lifecycle state (`store/lifecycle.py`), each in
transactions of its own; every step is idempotent, so a crash anywhere is repaired by the next
tick of a restarted controller: tasks persisted as `starting` are (re)started by an executor
that never starts a task twice, running tasks are re-adopted through their handles or marked
lost. Only the holder of the `reconciler` lease acts, so two controllers on one database never
both do. The loop runs as a thread of `rainier server` (the default) or as a process of its
own, `rainier controller` (`control/process.py`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from rainier.config import Settings
from rainier.control.admitting import AdmitHook, PendingJobs
from rainier.control.deployments import DeploymentController
from rainier.control.executor import Executor
from rainier.control.inventory import sync_inventory
from rainier.control.launch import Launches
from rainier.control.lease import LEASE, LeaseKeeper
from rainier.control.observing import RunningJobs, TaskHook
from rainier.control.starting import StartingTasks
from rainier.control.stopping import StoppingJobs
from rainier.scheduler import ClusterState, Scheduler, default_scheduler
from rainier.store.db import Store
from rainier.store.keys import JobTokens
from rainier.store.tables import utcnow

__all__ = ["LEASE", "AdmitHook", "Reconciler", "TaskHook", "TickHook", "TickStats"]

log = logging.getLogger("rainier.reconciler")
PASS_EVERY_S = 1.0
MIN_PASS_GAP_S = 0.1
PASS_SHARE = 0.15  # of the reconciler's time at most: a long queue spaces passes out, so
# submissions are not slowed by rescheduling thousands of pending jobs on every one of them

TickHook = Callable[[datetime], None]


@dataclass
class TickStats:
    leader: bool = False
    admitted: int = 0
    preempted: int = 0
    finished: int = 0


class Reconciler:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        settings: Settings,
        *,
        holder: str | None = None,
        scheduler: Scheduler | None = None,
        on_task_time: TaskHook | None = None,
        on_tick: TickHook | None = None,
        on_admit: AdmitHook | None = None,
    ):
        self.store = store
        self.executor = executor
        self.settings = settings
        self.holder = holder or f"{socket.gethostname()}:{id(self):x}"
        self.on_tick = on_tick
        self.ticks = 0
        self.wake = threading.Event()
        self._dirty = True
        self._last_pass = 0.0
        self._pass_gap = MIN_PASS_GAP_S
        self.lease = LeaseKeeper(store, self.holder, settings.lease_s)
        self.tokens = JobTokens.load(settings.home)
        self.launches = Launches(store, executor, settings, self.tokens)
        self.pending = PendingJobs(store, scheduler or default_scheduler(), on_admit)
        self.starting = StartingTasks(store, executor, self.launches)
        self.running = RunningJobs(store, executor, on_task_time)
        self.stopping = StoppingJobs(store, executor)
        self.deployments = DeploymentController(store, executor, settings)

    # -- the loop -------------------------------------------------------------------------

    def poke(self) -> None:
        """Something changed (a submission, a stop): schedule on the next tick, right away."""
        self._dirty = True
        self.wake.set()

    def run(self, stop: threading.Event) -> None:
        """Ticks every `tick_s`, sooner when poked, but never more often than MIN_PASS_GAP_S:
        a burst of submissions costs a few ticks, not one tick each."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("reconciler tick failed; retrying next tick")
            stop.wait(max(0.0, MIN_PASS_GAP_S - (time.monotonic() - started)))
            self.wake.wait(self.settings.tick_s)
            self.wake.clear()

    def tick(self) -> TickStats:
        """One pass of the loop, in this order:

        1. hold the lease, or do nothing (another controller acts);
        2. join and remove the nodes the executor discovers;
        3. start tasks persisted as `starting` (admitted work);
        4. observe live tasks; settle `running` jobs whose tasks are done;
        5. signal the tasks of `stopping` jobs; settle those whose tasks are gone;
        6. schedule `pending` jobs when due (persisting admissions and preemptions);
        7. start what 6 admitted, stop what it preempted, at once;
        8. the deployment controller (replicas' count, health and load);
        9. metering (`on_tick`).
        """
        stats = TickStats(leader=self.lease.hold())
        if not stats.leader:
            return stats
        sync_inventory(self.store, self.executor)
        self.starting.step()
        stats.finished = self.running.step()
        stats.finished += self.stopping.step()
        if self._pass_due(stats.finished):
            stats.admitted, stats.preempted = self._schedule()
        if stats.admitted:
            self.starting.step()
        if stats.preempted:
            self.stopping.step()
        self.deployments.tick()
        if self.on_tick is not None:
            self.on_tick(utcnow())
        self.ticks += 1
        return stats

    def _pass_due(self, finished: int) -> bool:
        since = time.monotonic() - self._last_pass
        due = since > max(PASS_EVERY_S, self._pass_gap)
        return (since >= self._pass_gap and (self._dirty or bool(finished))) or due

    def _schedule(self) -> tuple[int, int]:
        self._dirty = False
        self._last_pass = time.monotonic()
        admitted, preempted = self.pending.step()
        cost = time.monotonic() - self._last_pass
        self._pass_gap = max(MIN_PASS_GAP_S, cost / PASS_SHARE)
        return admitted, preempted

    def release_lease(self) -> None:
        self.lease.release()

    def cluster_state(self, s: Session, now_s: float) -> ClusterState:
        return self.pending.cluster_state(s, now_s)
