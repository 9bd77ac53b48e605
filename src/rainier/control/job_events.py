"""What the reconciler's handlers record about a job, and how a job reaches its end."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from rainier.control.stored import job_spec
from rainier.store.lifecycle import JobState, StopCause, TaskState, move_job
from rainier.store.tables import Event, Job, Task

log = logging.getLogger("rainier.reconciler")


def job_event(s: Session, object_id: str, tenant_id: str | None, kind: str, message: str) -> None:
    """Records a job's change, and says it in the server's log: one line per change."""
    s.add(Event(object_id=object_id, tenant_id=tenant_id, kind=kind, message=message))
    log.info("job %s %s: %s", object_id, kind, message)


def finish(
    s: Session,
    job: Job,
    state: JobState,
    reason: str,
    now: datetime,
    code: int | None = None,
) -> bool:
    """Ends the job in `state`; True, as every handler counts a job that left its chips."""
    move_job(job, state)
    job.reason, job.finished_at, job.exit_code = reason, now, code
    job_event(s, job.id, job.tenant_id, state, reason)
    return True


def failed_tasks(tasks: list[Task]) -> list[Task]:
    return [
        t
        for t in tasks
        if t.state == TaskState.LOST or (t.state == TaskState.EXITED and t.exit_code != 0)
    ]


def ending_of(failed: list[Task]) -> str:
    """What the runtime said of how a failed task ended (an out-of-memory kill, say)."""
    return next((str(e) for t in failed if (e := (t.handle or {}).get("ending"))), "")


def settle(s: Session, job: Job, tasks: list[Task], now: datetime) -> bool:
    """A placed job whose current attempt has no live task left: where it goes next.

    Stopped on request; back to the queue when preempted or requeued; succeeded when every
    task exited 0; else restarted while its `max_restarts` allow, failed after."""
    if job.stop_cause == StopCause.REQUESTED:
        return finish(s, job, JobState.STOPPED, "stopped on request", now)
    if job.stop_cause is not None and StopCause(job.stop_cause).returns_to_queue:
        move_job(job, JobState.PENDING)
        job.placement = None
        job.attempt += 1
        job.preemptions += 1
        job.reason = "preempted; waiting to resume from its checkpoint"
        job_event(s, job.id, job.tenant_id, "requeued", job.reason)
        return True
    failed = failed_tasks(tasks)
    if not failed:
        return finish(s, job, JobState.SUCCEEDED, "all tasks exited with code 0", now, 0)
    code = next((t.exit_code for t in failed if t.exit_code is not None), None)
    max_restarts = job_spec(job).max_restarts
    if job.restarts < max_restarts:
        move_job(job, JobState.PENDING)
        job.placement = None
        job.attempt += 1
        job.restarts += 1
        job.reason = f"restarting ({job.restarts}/{max_restarts}) after task failure (code {code})"
        job_event(s, job.id, job.tenant_id, "restarting", job.reason)
        return True
    ending = ending_of(failed)
    reason = f"{ending} (task exited with code {code})" if ending else None
    return finish(s, job, JobState.FAILED, reason or f"task failed with code {code}", now, code)
