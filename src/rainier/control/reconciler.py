"""The reconciler: moves the cluster from the state it observes toward the state users asked for.

Each tick observes tasks, advances jobs, asks the scheduler for decisions, persists them, and
only then acts on them. Every step is idempotent, so a crash anywhere is repaired by the next tick
of a restarted server: tasks persisted as `starting` are (re)started by an executor that never
starts a task twice, running tasks are re-adopted through their handles or marked lost.
Only the holder of the `reconciler` lease acts, so two servers on one database never both do.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rainier.config import Settings
from rainier.control.deployments import DeploymentController
from rainier.control.executor import Executor, UnstartableTask
from rainier.control.isolation import schedule_isolated
from rainier.control.launch import Launches
from rainier.control.state import ACTIVE_JOB_STATES, cluster_state
from rainier.scheduler import ClusterState, Decisions, Scheduler, Workload, default_scheduler
from rainier.scheduler.chips import assign_gang, held_chips
from rainier.store.db import Store
from rainier.store.keys import JobTokens
from rainier.store.tables import Event, Job, Lease, Node, Task, Tenant, utcnow

log = logging.getLogger("rainier.reconciler")
LEASE = "reconciler"
LIVE_TASK_STATES = ("starting", "running")
PASS_EVERY_S = 1.0
MIN_PASS_GAP_S = 0.1
PASS_SHARE = 0.15  # of the reconciler's time at most: a long queue spaces passes out, so
# submissions are not slowed by rescheduling thousands of pending jobs on every one of them

TaskHook = Callable[[Session, Job, Task, datetime], None]
TickHook = Callable[[datetime], None]
AdmitHook = Callable[[str, str, float], None]  # tenant, flavor, seconds waited


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
        self.scheduler = scheduler or default_scheduler()
        self.on_task_time = on_task_time
        self.on_tick = on_tick
        self.on_admit = on_admit
        self.ticks = 0
        self.wake = threading.Event()
        self._dirty = True
        self._last_pass = 0.0
        self._pass_gap = MIN_PASS_GAP_S
        self._workloads: dict[str, Workload] = {}
        self._reasons: dict[str, str] = {}
        self._term_resent: set[str] = set()
        self._lease_renewed = 0.0
        self.deployments = DeploymentController(store, executor, settings)
        self.tokens = JobTokens.load(settings.home)
        self.launches = Launches(store, executor, settings, self.tokens)

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
        stats = TickStats(leader=self._hold_lease())
        if not stats.leader:
            return stats
        self._sync_inventory()
        self._launch_persisted()
        stats.finished = self._observe()
        since = time.monotonic() - self._last_pass
        due = since > max(PASS_EVERY_S, self._pass_gap)
        if (since >= self._pass_gap and (self._dirty or stats.finished)) or due:
            self._dirty = False
            self._last_pass = time.monotonic()
            admitted, preempted = self._schedule()
            stats.admitted, stats.preempted = admitted, preempted
            cost = time.monotonic() - self._last_pass
            self._pass_gap = max(MIN_PASS_GAP_S, cost / PASS_SHARE)
        if stats.admitted:
            self._launch_persisted()
        self.deployments.tick()
        if self.on_tick is not None:
            self.on_tick(utcnow())
        self.ticks += 1
        return stats

    def _hold_lease(self) -> bool:
        now = time.time()
        if now - self._lease_renewed < self.settings.lease_s / 3:
            return True  # our lease runs well beyond now; nobody can have taken it
        with self.store.read() as s:
            held = s.get(Lease, LEASE)
            if held is not None and held.holder != self.holder and held.expires_at >= now:
                return False  # a follower looks without taking the write lock
        try:
            with self.store.write() as s:
                lease = s.get(Lease, LEASE, with_for_update=True)
                if lease is None:
                    s.add(
                        Lease(
                            name=LEASE, holder=self.holder, expires_at=now + self.settings.lease_s
                        )
                    )
                    self._lease_renewed = now
                    return True
                if lease.holder == self.holder or lease.expires_at < now:
                    lease.holder = self.holder
                    lease.expires_at = now + self.settings.lease_s
                    self._lease_renewed = now
                    return True
                return False
        except IntegrityError:
            return False

    def release_lease(self) -> None:
        self._lease_renewed = 0.0
        with self.store.write() as s:
            lease = s.get(Lease, LEASE, with_for_update=True)
            if lease is not None and lease.holder == self.holder:
                lease.expires_at = 0.0

    # -- inventory --------------------------------------------------------------------------

    def _sync_inventory(self) -> None:
        found = self.executor.inventory()
        if found is None:
            return
        seen = {n.name: n for n in found.nodes}
        now = utcnow()
        with self.store.write() as s:
            rows = {
                n.name: n for n in s.scalars(select(Node).where(Node.source == self.executor.name))
            }
            for name, info in seen.items():
                row = rows.get(name)
                if row is None:
                    s.add(
                        Node(
                            id=f"node-{name}",
                            name=name,
                            flavor=info.flavor,
                            chips=info.chips,
                            zone=info.zone,
                            block=info.block,
                            rack=info.rack,
                            address=found.addresses.get(name, ""),
                            source=self.executor.name,
                            schedulable=True,
                            seen_at=now,
                        )
                    )
                    _event(
                        s,
                        f"node-{name}",
                        None,
                        "joined",
                        f"node {name} joined ({info.chips} {info.flavor})",
                    )
                else:
                    row.seen_at = now
                    row.schedulable = True
            for name, row in rows.items():
                if name not in seen:
                    _event(s, row.id, None, "left", f"node {name} left the cluster")
                    s.delete(row)

    # -- starting what was decided ----------------------------------------------------------

    def _launch_persisted(self) -> None:
        with self.store.read() as s:
            todo = s.execute(
                select(Task, Job)
                .join(Job, Job.id == Task.job_id)
                .where(Task.state == "starting", Task.handle.is_(None))
                .order_by(Task.job_id, Task.rank)
            ).all()
            tenants = {t.id: t.name for t in s.scalars(select(Tenant))}
        unstartable: set[str] = set()
        for task, job in todo:
            if job.state != "running" or job.attempt != task.attempt or job.id in unstartable:
                with self.store.write() as s:
                    row = s.get(Task, task.id)
                    if row is not None and row.handle is None:
                        row.state, row.exited_at = "lost", utcnow()
                continue
            launch = self.launches.launch_of(job, task, tenants.get(job.tenant_id, ""))
            try:
                handle = self.executor.start(launch)
            except UnstartableTask as exc:
                unstartable.add(job.id)
                self._fail_unstartable(job.id, task.id, f"task {task.rank} cannot start: {exc}")
                continue
            except Exception as exc:
                # The placement went stale (a node died before the inventory noticed): the job
                # goes back to the queue without spending one of its restarts.
                log.exception("cannot start task %s", task.id)
                unstartable.add(job.id)
                with self.store.write() as s:
                    row = s.get(Task, task.id)
                    if row is not None:
                        row.state, row.exit_code, row.exited_at = "lost", None, utcnow()
                    current = s.get(Job, job.id)
                    if current is not None and current.state == "running":
                        current.preempting = True
                        current.reason = (
                            f"could not start task {task.rank} on {task.node}; requeued"
                        )
                    _event(s, job.id, job.tenant_id, "start-failed", f"task {task.rank}: {exc}")
                continue
            with self.store.write() as s:
                row = s.get(Task, task.id)
                if row is not None:
                    row.handle = handle
                    row.state = "running"
                    row.started_at = row.started_at or _started_at(handle) or utcnow()
                    row.billed_until = row.billed_until or row.started_at

    def _fail_unstartable(self, job_id: str, task_id: str, reason: str) -> None:
        """A launch that can never succeed fails the job, rather than requeueing it forever;
        ranks of the gang already started are killed."""
        now = utcnow()
        with self.store.write() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != "running":
                return
            for row in s.scalars(
                select(Task).where(Task.job_id == job_id, Task.state.in_(LIVE_TASK_STATES))
            ):
                if row.handle is not None and row.id != task_id:
                    self.executor.kill(row.id, row.handle)
                row.state, row.exited_at = "lost", now
            self._finish(s, job, "failed", reason, now)

    # -- observing --------------------------------------------------------------------------

    def _observe(self) -> int:
        with self.store.read() as s:
            tasks = s.scalars(
                select(Task).where(Task.state.in_(LIVE_TASK_STATES), Task.handle.is_not(None))
            ).all()
        observed = {t.id: self.executor.status(t.id, t.handle or {}) for t in tasks}
        now = utcnow()
        finished = 0
        with self.store.write() as s:
            jobs = s.scalars(select(Job).where(Job.state.in_(ACTIVE_JOB_STATES))).all()
            job_ids = [j.id for j in jobs]
            all_tasks = (
                s.scalars(select(Task).where(Task.job_id.in_(job_ids))).all() if job_ids else []
            )
            by_job: dict[str, list[Task]] = {}
            for t in all_tasks:
                by_job.setdefault(t.job_id, []).append(t)
            for job in jobs:
                current = [t for t in by_job.get(job.id, []) if t.attempt == job.attempt]
                for task in current:
                    status = observed.get(task.id)
                    if status is None or task.state not in LIVE_TASK_STATES:
                        continue
                    if status.state == "exited":
                        task.state, task.exit_code = "exited", status.exit_code
                        task.exited_at = status.exited_at or now
                        said = f"task {task.rank} exited with code {status.exit_code}"
                        if status.detail:
                            task.handle = {**(task.handle or {}), "ending": status.detail}
                            said += f": {status.detail}"
                        _event(s, job.id, job.tenant_id, "task-exited", said)
                    elif status.state == "lost":
                        task.state, task.exited_at = "lost", now
                        _event(
                            s,
                            job.id,
                            job.tenant_id,
                            "task-lost",
                            f"task {task.rank} lost: {status.detail}",
                        )
                    self._bill(s, job, task, task.exited_at or status.alive_at or now)
                if self._advance(s, job, current, now):
                    finished += 1
        return finished

    def _bill(self, s: Session, job: Job, task: Task, until: datetime) -> None:
        if self.on_task_time is not None and task.started_at is not None:
            self.on_task_time(s, job, task, until)

    def _advance(self, s: Session, job: Job, tasks: list[Task], now: datetime) -> bool:
        """Moves one running job on; True when it left the running states."""
        alive = [t for t in tasks if t.state in LIVE_TASK_STATES]
        failed = [
            t for t in tasks if t.state == "lost" or (t.state == "exited" and t.exit_code != 0)
        ]
        ending = next((str(e) for t in failed if (e := (t.handle or {}).get("ending"))), "")
        if alive:
            if failed and job.state == "running" and not (job.stop_requested or job.preempting):
                job.state = "stopping"
                job.reason = f"task {failed[0].rank} failed; stopping the gang"
                if ending:
                    job.reason = f"{ending} in task {failed[0].rank}; stopping the gang"
            if job.state == "stopping" or job.stop_requested or job.preempting:
                self._terminate(s, job, alive, now)
            return False
        if not tasks:
            return False
        if job.stop_requested:
            return self._finish(s, job, "stopped", "stopped on request", now)
        if job.preempting:
            job.state, job.preempting, job.placement = "pending", False, None
            job.attempt += 1
            job.preemptions += 1
            job.reason = "preempted; waiting to resume from its checkpoint"
            _event(s, job.id, job.tenant_id, "requeued", job.reason)
            return True
        if not failed:
            return self._finish(s, job, "succeeded", "all tasks exited with code 0", now, 0)
        code = next((t.exit_code for t in failed if t.exit_code is not None), None)
        max_restarts = int(job.spec.get("max_restarts", 0))
        if job.restarts < max_restarts:
            job.state, job.placement = "pending", None
            job.attempt += 1
            job.restarts += 1
            job.reason = (
                f"restarting ({job.restarts}/{max_restarts}) after task failure (code {code})"
            )
            _event(s, job.id, job.tenant_id, "restarting", job.reason)
            return True
        reason = f"{ending} (task exited with code {code})" if ending else None
        return self._finish(s, job, "failed", reason or f"task failed with code {code}", now, code)

    def _finish(
        self, s: Session, job: Job, state: str, reason: str, now: datetime, code: int | None = None
    ) -> bool:
        job.state, job.reason, job.finished_at, job.exit_code = state, reason, now, code
        job.stop_requested = job.preempting = False
        _event(s, job.id, job.tenant_id, state, reason)
        return True

    def _terminate(self, s: Session, job: Job, alive: list[Task], now: datetime) -> None:
        grace = float(job.spec.get("grace_period_s", 30.0))
        for task in alive:
            if task.handle is None:
                task.state, task.exited_at = "lost", now
                continue
            if task.term_sent_at is None:
                self.executor.signal_stop(task.id, task.handle)
                task.term_sent_at = now
                task.kill_at = now + timedelta(seconds=grace)
            elif task.kill_at is not None and now >= task.kill_at:
                self.executor.kill(task.id, task.handle)
            elif _signalled_while_starting(task, now) and task.id not in self._term_resent:
                # a SIGTERM that came while the sandbox was still starting the workload was
                # ignored with the sandbox's own; the workload hears this one
                if len(self._term_resent) > 10_000:
                    self._term_resent.clear()  # ids of tasks long gone; the worst is one more TERM
                self._term_resent.add(task.id)
                self.executor.signal_stop(task.id, task.handle)

    # -- scheduling -------------------------------------------------------------------------

    def cluster_state(self, s: Session, now_s: float) -> ClusterState:
        return cluster_state(s, now_s, self._workloads, self._reasons)

    def _schedule(self) -> tuple[int, int]:
        now_s = time.time()
        with self.store.read() as s:
            state = self.cluster_state(s, now_s)
        if not state.pending:
            return 0, 0
        isolated = schedule_isolated(self.scheduler, state)
        if isolated.failed:
            self._fail_unschedulable(isolated.failed)
        return self._persist(isolated.decisions)

    def _fail_unschedulable(self, failed: dict[str, str]) -> None:
        """Pending jobs the scheduler fails on: failed with the error, so the others go on."""
        now = utcnow()
        with self.store.write() as s:
            for job in s.scalars(select(Job).where(Job.id.in_(list(failed)))):
                if job.state == "pending":
                    reason = f"the scheduler cannot consider this job: {failed[job.id]}"
                    self._finish(s, job, "failed", reason[:1000], now)

    def _persist(self, decisions: Decisions) -> tuple[int, int]:
        now = utcnow()
        admitted = preempted = 0
        if (
            not decisions.admit
            and not decisions.preempt
            and all(self._reasons.get(w.workload_id) == w.reason for w in decisions.wait)
        ):
            return 0, 0  # nothing to write: don't take the write lock from submissions
        with self.store.write() as s:
            held, sizes = self._chips_in_use(s) if decisions.admit else ({}, {})
            for admit in decisions.admit:
                job = s.get(Job, admit.workload_id)
                if job is None or job.state != "pending":
                    continue
                job.state = "running"
                job.placement = {
                    "nodes": list(admit.node_names),
                    "chips": assign_gang(admit.node_names, job.chips_per_node, sizes, held),
                }
                job.started_at = now
                job.reason = admit.reason
                for rank, node in enumerate(admit.node_names):
                    s.add(
                        Task(
                            id=f"{job.id}.a{job.attempt}.r{rank}",
                            job_id=job.id,
                            attempt=job.attempt,
                            rank=rank,
                            node=node,
                            chips=job.chips_per_node,
                            state="starting",
                        )
                    )
                _event(
                    s,
                    job.id,
                    job.tenant_id,
                    "admitted",
                    f"placed on {', '.join(admit.node_names)}: {admit.reason}",
                )
                admitted += 1
                workload = self._workloads.get(job.id)
                if self.on_admit is not None and workload is not None and job.attempt == 0:
                    waited = now.timestamp() - workload.submitted_s
                    self.on_admit(workload.tenant, job.flavor, waited)
            for pre in decisions.preempt:
                job = s.get(Job, pre.workload_id)
                if job is None or job.state != "running" or job.preempting:
                    continue
                job.preempting = True
                job.reason = pre.reason
                _event(s, job.id, job.tenant_id, "preempting", pre.reason)
                preempted += 1
            changed = [
                {"jid": w.workload_id, "reason": w.reason}
                for w in decisions.wait
                if self._reasons.get(w.workload_id) != w.reason
            ]
            if changed:
                jobs = cast(Table, Job.__table__)
                s.connection().execute(
                    update(jobs)
                    .where(jobs.c.id == bindparam("jid"), jobs.c.state == "pending")
                    .values(reason=bindparam("reason")),
                    changed,
                )
                self._reasons.update((c["jid"], c["reason"]) for c in changed)
        if preempted:
            self._terminate_preempted()
        return admitted, preempted

    def _chips_in_use(self, s: Session) -> tuple[dict[str, set[int]], dict[str, int]]:
        """Which chips each node's placed jobs hold, and each node's size."""
        placements = s.scalars(select(Job.placement).where(Job.state.in_(ACTIVE_JOB_STATES)))
        sizes = {n.name: n.chips for n in s.scalars(select(Node))}
        return held_chips(p for p in placements if p), sizes

    def _terminate_preempted(self) -> None:
        now = utcnow()
        with self.store.write() as s:
            for job in s.scalars(select(Job).where(Job.preempting.is_(True))):
                alive = s.scalars(
                    select(Task).where(
                        Task.job_id == job.id,
                        Task.attempt == job.attempt,
                        Task.state.in_(LIVE_TASK_STATES),
                    )
                ).all()
                self._terminate(s, job, list(alive), now)


def _event(s: Session, object_id: str, tenant_id: str | None, kind: str, message: str) -> None:
    """Records a job's change, and says it in the server's log: one line per change."""
    s.add(Event(object_id=object_id, tenant_id=tenant_id, kind=kind, message=message))
    log.info("job %s %s: %s", object_id, kind, message)


def _started_at(handle: dict[str, Any]) -> datetime | None:
    """The executor's own start instant, when its handle records one (epoch microseconds)."""
    micros = handle.get("started_us")
    if not isinstance(micros, int):
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


# A task that had run less than this when it was asked to stop may not have heard it yet.
STARTING_S = 5.0
# ... so it is asked once more this long after.
TERM_AGAIN_S = 1.0


def _signalled_while_starting(task: Task, now: datetime) -> bool:
    sent, started = task.term_sent_at, task.started_at
    if sent is None or started is None or now - sent < timedelta(seconds=TERM_AGAIN_S):
        return False
    return sent - started < timedelta(seconds=STARTING_S)
