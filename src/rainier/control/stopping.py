"""Stopping jobs: asking one to stop (the one place that does, for users, replaced
submissions and the deployment controller alike), and the reconciler's handler that stops
their tasks and settles them once the last is gone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.control.executor import Executor
from rainier.control.job_events import settle
from rainier.control.stored import job_spec
from rainier.store.db import Store
from rainier.store.lifecycle import (
    LIVE_TASK_STATES,
    JobState,
    StopCause,
    TaskState,
    is_stop_requested,
    move_job,
    move_task,
)
from rainier.store.tables import Event, Job, Task, utcnow

log = logging.getLogger("rainier.jobs")


def request_stop(s: Session, job: Job, why: str, *, before_start: str | None = None) -> bool:
    """Stops a live job: a pending one at once (its reason `before_start`, else `why`), a
    placed one through its tasks (SIGTERM, then SIGKILL after its grace period). False when
    there was nothing to do: the job had ended, or a stop was already asked for."""
    if JobState(job.state).terminal or is_stop_requested(job):
        return False
    if job.state == JobState.PENDING:
        move_job(job, JobState.STOPPED)
        job.reason, job.finished_at = before_start or why, utcnow()
    else:
        move_job(job, JobState.STOPPING, StopCause.REQUESTED)
        job.reason = why
    s.add(Event(object_id=job.id, tenant_id=job.tenant_id, kind="stop", message=why))
    log.info("job %s stop: %s (%s)", job.id, why, job.state)
    return True


# A task that had run less than this when it was asked to stop may not have heard it yet.
STARTING_S = 5.0
# ... so it is asked once more this long after.
TERM_AGAIN_S = 1.0


class StoppingJobs:
    """The handler of `stopping` jobs: SIGTERM to each live task, SIGKILL after the job's
    grace period; once none is left, the job settles where its stop cause sends it."""

    def __init__(self, store: Store, executor: Executor):
        self.store = store
        self.executor = executor
        self._term_resent: set[str] = set()

    def step(self) -> int:
        """One transaction over every stopping job; how many left their chips."""
        now = utcnow()
        settled = 0
        with self.store.write() as s:
            jobs = s.scalars(select(Job).where(Job.state == JobState.STOPPING)).all()
            tasks = current_tasks(s, jobs)
            for job in jobs:
                mine = tasks.get(job.id, [])
                alive = [t for t in mine if t.state in LIVE_TASK_STATES]
                if alive:
                    self.terminate(job, alive, now)
                elif mine and settle(s, job, mine, now):
                    settled += 1
        return settled

    def terminate(self, job: Job, alive: list[Task], now: datetime) -> None:
        grace = job_spec(job).grace_period_s
        for task in alive:
            if task.handle is None:
                move_task(task, TaskState.LOST)
                task.exited_at = now
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


def current_tasks(s: Session, jobs: Sequence[Job]) -> dict[str, list[Task]]:
    """Each job's tasks of its current attempt."""
    attempts = {j.id: j.attempt for j in jobs}
    by_job: dict[str, list[Task]] = {}
    for start in range(0, len(attempts), 500):
        ids = list(attempts)[start : start + 500]
        for t in s.scalars(select(Task).where(Task.job_id.in_(ids)).order_by(Task.rank)):
            if t.attempt == attempts[t.job_id]:
                by_job.setdefault(t.job_id, []).append(t)
    return by_job


def _signalled_while_starting(task: Task, now: datetime) -> bool:
    sent, started = task.term_sent_at, task.started_at
    if sent is None or started is None or now - sent < timedelta(seconds=TERM_AGAIN_S):
        return False
    return sent - started < timedelta(seconds=STARTING_S)
