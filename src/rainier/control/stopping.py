"""Asking a job to stop: the one place that does it, for users, replaced submissions and the
deployment controller alike."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from rainier.store.lifecycle import JobState, StopCause, is_stop_requested, move_job
from rainier.store.tables import Event, Job, utcnow

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
