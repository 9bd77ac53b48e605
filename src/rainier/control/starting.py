"""The handler of admitted work: tasks persisted as `starting` are handed to the executor.

A task row exists before its process does, so a crash between the two is repaired here on the
next tick: the executor never starts a task twice. Each task's outcome is its own transaction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from rainier.control.executor import Executor, UnstartableTask
from rainier.control.job_events import finish, job_event
from rainier.control.launch import Launches
from rainier.store.db import Store
from rainier.store.lifecycle import (
    LIVE_TASK_STATES,
    JobState,
    StopCause,
    TaskState,
    move_job,
    move_task,
)
from rainier.store.tables import Job, Task, Tenant, utcnow

log = logging.getLogger("rainier.reconciler")


class StartingTasks:
    def __init__(self, store: Store, executor: Executor, launches: Launches):
        self.store = store
        self.executor = executor
        self.launches = launches

    def step(self) -> None:
        with self.store.read() as s:
            todo = s.execute(
                select(Task, Job)
                .join(Job, Job.id == Task.job_id)
                .where(Task.state == TaskState.STARTING, Task.handle.is_(None))
                .order_by(Task.job_id, Task.rank)
            ).all()
            tenants = {t.id: t.name for t in s.scalars(select(Tenant))} if todo else {}
        unstartable: set[str] = set()
        for task, job in todo:
            if (
                job.state != JobState.RUNNING
                or job.attempt != task.attempt
                or job.id in unstartable
            ):
                self._forget(task.id)
                continue
            launch = self.launches.launch_of(job, task, tenants.get(job.tenant_id, ""))
            try:
                handle = self.executor.start(launch)
            except UnstartableTask as exc:
                unstartable.add(job.id)
                self._fail(job.id, task.id, f"task {task.rank} cannot start: {exc}")
                continue
            except Exception as exc:
                log.exception("cannot start task %s", task.id)
                unstartable.add(job.id)
                self._requeue(job, task, exc)
                continue
            self._started(task.id, handle)

    def _forget(self, task_id: str) -> None:
        """A task of an attempt that is over (or of a gang that cannot start) never starts."""
        with self.store.write() as s:
            row = s.get(Task, task_id)
            if row is not None and row.handle is None and row.state in LIVE_TASK_STATES:
                move_task(row, TaskState.LOST)
                row.exited_at = utcnow()

    def _started(self, task_id: str, handle: dict[str, Any]) -> None:
        with self.store.write() as s:
            row = s.get(Task, task_id)
            if row is not None and row.state == TaskState.STARTING:
                row.handle = handle
                move_task(row, TaskState.RUNNING)
                row.started_at = row.started_at or _started_at(handle) or utcnow()
                row.billed_until = row.billed_until or row.started_at

    def _requeue(self, job: Job, task: Task, exc: Exception) -> None:
        """The placement went stale (a node died before the inventory noticed): the job goes
        back to the queue without spending one of its restarts."""
        with self.store.write() as s:
            row = s.get(Task, task.id)
            if row is not None and row.state in LIVE_TASK_STATES:
                move_task(row, TaskState.LOST)
                row.exit_code, row.exited_at = None, utcnow()
            current = s.get(Job, job.id)
            if current is not None and current.state == JobState.RUNNING:
                move_job(current, JobState.STOPPING, StopCause.REQUEUED)
                current.reason = f"could not start task {task.rank} on {task.node}; requeued"
            job_event(s, job.id, job.tenant_id, "start-failed", f"task {task.rank}: {exc}")

    def _fail(self, job_id: str, task_id: str, reason: str) -> None:
        """A launch that can never succeed fails the job, rather than requeueing it forever;
        ranks of the gang already started are killed."""
        now = utcnow()
        with self.store.write() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != JobState.RUNNING:
                return
            for row in s.scalars(
                select(Task).where(Task.job_id == job_id, Task.state.in_(LIVE_TASK_STATES))
            ):
                if row.handle is not None and row.id != task_id:
                    self.executor.kill(row.id, row.handle)
                move_task(row, TaskState.LOST)
                row.exited_at = now
            finish(s, job, JobState.FAILED, reason, now)


def _started_at(handle: dict[str, Any]) -> datetime | None:
    """The executor's own start instant, when its handle records one (epoch microseconds)."""
    micros = handle.get("started_us")
    if not isinstance(micros, int):
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
