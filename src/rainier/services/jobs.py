"""Jobs: the row a submission writes, stopping one, what its runtime reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.control.stopping import request_stop as stop_job
from rainier.spec import JobSpec
from rainier.store.db import Store
from rainier.store.lifecycle import LIVE_JOB_STATES, JobState, holds_its_name
from rainier.store.tables import Job, JobMetric, new_id, utcnow


def new_job_row(doc: JobSpec, tenant_id: str, submit_key: str | None) -> dict[str, Any]:
    """The jobs-table row of a submission, as the batched submission writer inserts it: every
    column, so the API can answer from it without reading the row back."""
    return {
        "id": new_id("job"),
        "tenant_id": tenant_id,
        "name": doc.name,
        "kind": "job",
        "spec": doc.model_dump(mode="json"),
        "flavor": doc.flavor,
        "nodes": doc.nodes,
        "chips_per_node": doc.chips_per_node,
        "priority": doc.priority,
        "state": JobState.PENDING,
        "stop_cause": None,
        "reason": "queued",
        "attempt": 0,
        "restarts": 0,
        "preemptions": 0,
        "submit_key": submit_key,
        "created_at": utcnow(),
    }


def request_stop(s: Session, job: Job, why: str) -> None:
    """A user's stop: a pending job stops at once, a placed one through its tasks."""
    stop_job(s, job, why, before_start=f"stopped before it started: {why}")


def stop_live(store: Store, tenant_id: str, name: str, why: str) -> None:
    """Stops the tenant's live job of this name, if any (a new submission replaces it)."""
    with store.write() as s:
        for job in s.scalars(
            select(Job).where(
                Job.tenant_id == tenant_id,
                Job.name == name,
                Job.kind == "job",
                Job.state.in_(LIVE_JOB_STATES),
            )
        ):
            if holds_its_name(job.state, job.stop_cause):
                request_stop(s, job, why)


def record_metrics(s: Session, job: Job, step: int, metrics: dict[str, float]) -> None:
    """A training runtime's progress: kept in full and as the job's latest figures."""
    s.add(JobMetric(job_id=job.id, step=step, values=metrics))
    job.metrics = {"step": step, **metrics}
