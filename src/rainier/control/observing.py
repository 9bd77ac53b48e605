"""The handler of placed jobs' tasks: what the executor observes becomes task state, elapsed
chip-time goes to metering, and a `running` job whose tasks are done settles (or, with a rank
failed and others alive, starts stopping its gang)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.control.executor import Executor, TaskStatus
from rainier.control.job_events import ending_of, failed_tasks, job_event, settle
from rainier.control.stopping import current_tasks
from rainier.store.db import Store
from rainier.store.lifecycle import (
    LIVE_TASK_STATES,
    PLACED_JOB_STATES,
    JobState,
    StopCause,
    TaskState,
    move_job,
    move_task,
)
from rainier.store.tables import Job, Task, utcnow

TaskHook = Callable[[Session, Job, Task, datetime], None]


class RunningJobs:
    def __init__(self, store: Store, executor: Executor, on_task_time: TaskHook | None = None):
        self.store = store
        self.executor = executor
        self.on_task_time = on_task_time

    def step(self) -> int:
        """Asks the executor about every live task (outside any transaction), then records
        it all in one; how many jobs left their chips."""
        with self.store.read() as s:
            tasks = s.scalars(
                select(Task).where(Task.state.in_(LIVE_TASK_STATES), Task.handle.is_not(None))
            ).all()
        observed = {t.id: self.executor.status(t.id, t.handle or {}) for t in tasks}
        now = utcnow()
        settled = 0
        with self.store.write() as s:
            jobs = s.scalars(select(Job).where(Job.state.in_(PLACED_JOB_STATES))).all()
            by_job = current_tasks(s, jobs)
            for job in jobs:
                current = by_job.get(job.id, [])
                for task in current:
                    status = observed.get(task.id)
                    if status is not None and task.state in LIVE_TASK_STATES:
                        self._record(s, job, task, status, now)
                if job.state == JobState.RUNNING and self._advance(s, job, current, now):
                    settled += 1
        return settled

    def _record(self, s: Session, job: Job, task: Task, status: TaskStatus, now: datetime) -> None:
        if status.state == "exited":
            move_task(task, TaskState.EXITED)
            task.exit_code = status.exit_code
            task.exited_at = status.exited_at or now
            said = f"task {task.rank} exited with code {status.exit_code}"
            if status.detail:
                task.handle = {**(task.handle or {}), "ending": status.detail}
                said += f": {status.detail}"
            job_event(s, job.id, job.tenant_id, "task-exited", said)
        elif status.state == "lost":
            move_task(task, TaskState.LOST)
            task.exited_at = now
            job_event(
                s, job.id, job.tenant_id, "task-lost", f"task {task.rank} lost: {status.detail}"
            )
        if self.on_task_time is not None and task.started_at is not None:
            self.on_task_time(s, job, task, task.exited_at or status.alive_at or now)

    def _advance(self, s: Session, job: Job, tasks: list[Task], now: datetime) -> bool:
        """A running job: a failed rank stops the gang; no live task left settles it."""
        alive = [t for t in tasks if t.state in LIVE_TASK_STATES]
        failed = failed_tasks(tasks)
        if alive:
            if failed:
                move_job(job, JobState.STOPPING, StopCause.TASK_FAILED)
                ending = ending_of(failed)
                job.reason = f"task {failed[0].rank} failed; stopping the gang"
                if ending:
                    job.reason = f"{ending} in task {failed[0].rank}; stopping the gang"
            return False
        return bool(tasks) and settle(s, job, tasks, now)
