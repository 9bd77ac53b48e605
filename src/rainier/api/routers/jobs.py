"""Jobs: submit, list, describe, stop, logs and metrics."""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import Table, select
from starlette.concurrency import run_in_threadpool

from rainier.api.auth import Caller, Principal, require
from rainier.api.deps import StoreDep, visible_job, visible_tenant
from rainier.api.errors import ApiError
from rainier.api.logtail import tail_offset
from rainier.api.schemas import (
    MAX_OFFSET,
    EventOut,
    JobDetail,
    JobOut,
    LogChunk,
    MetricsIn,
    Page,
    TaskOut,
)
from rainier.limits import MAX_NODES_PER_JOB
from rainier.services.jobs import new_job_row, record_metrics, request_stop, stop_live
from rainier.spec import JobSpec
from rainier.store.db import Store
from rainier.store.lifecycle import JobState
from rainier.store.tables import Event, Job, JobMetric, Task, Tenant

router = APIRouter(prefix="/api/v1", tags=["jobs"])
log = logging.getLogger("rainier.jobs")
MAX_LOG_CHUNK = 1 << 20
JSON = "application/json"


def job_out(job: Any, tenant: str) -> JobOut:
    """A job (an ORM object or a row of the jobs table) as the API shows it; built without
    re-validation, since the database holds only validated values."""
    return JobOut.model_construct(
        id=job.id,
        name=job.name,
        tenant=tenant,
        kind=job.kind,
        state=job.state,
        stop_cause=job.stop_cause,
        reason=job.reason,
        flavor=job.flavor,
        nodes=job.nodes,
        chips_per_node=job.chips_per_node,
        priority=job.priority,
        attempt=job.attempt,
        restarts=job.restarts,
        preemptions=job.preemptions,
        placement=(job.placement or {}).get("nodes"),
        exit_code=job.exit_code,
        metrics=job.metrics,
        spec=job.spec,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@router.post("/jobs", status_code=201, response_model=JobOut)
async def submit_job(
    doc: JobSpec,
    caller: Caller,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    replace: bool = False,
) -> Response:
    """Queues a job. With an `Idempotency-Key`, a retried submission returns the first one.

    A name is one live (pending or running) job per tenant: another submission of it is
    refused (409) unless `replace=true`, which stops the live one first. A gang that no set of
    the flavor's nodes can ever hold is refused (422) with that reason.

    The hot path of the API: no thread hop unless an operator names a tenant, and the row is
    committed with the others that arrived meanwhile (see `SubmissionWriter`).
    """
    require(caller, "operator", "admin", "member")
    store: Store = request.app.state.store
    if doc.tenant is None or doc.tenant == caller.tenant:
        tenant_id, tenant = _own_tenant(caller)
    else:
        tenant_id, tenant = await run_in_threadpool(_named_tenant, store, caller, doc.tenant)
    row = new_job_row(doc, tenant_id, idempotency_key)
    if replace:
        await run_in_threadpool(
            stop_live, store, tenant_id, doc.name, "replaced by a new submission of its name"
        )
        request.app.state.wake()
    written = await request.app.state.submissions.submit(row)
    if written.refused is not None:
        raise written.refused
    if written.existing is not None:
        return Response(job_out(written.existing, tenant).model_dump_json(), 200, media_type=JSON)
    out = JobOut.model_construct(
        **{k: v for k, v in row.items() if k in JobOut.model_fields},
        tenant=tenant,
        placement=None,
        exit_code=None,
        metrics=None,
        started_at=None,
        finished_at=None,
    )
    return Response(out.model_dump_json(), 201, media_type=JSON)


def _own_tenant(caller: Principal) -> tuple[str, str]:
    if caller.tenant_id is None or caller.tenant is None:
        raise ApiError(422, "an operator key must name the job's tenant", field="tenant")
    return caller.tenant_id, caller.tenant


def _named_tenant(store: Store, caller: Principal, name: str) -> tuple[str, str]:
    with store.read() as s:
        tenant = visible_tenant(s, caller, name)
        return tenant.id, tenant.name


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    caller: Caller,
    store: StoreDep,
    state: Annotated[list[JobState] | None, Query()] = None,
    name: str | None = None,
    tenant: str | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Response:
    """Newest first; pass `next_cursor` back as `cursor` for the next page.

    Rows, not ORM objects, and one serialisation: a page of a thousand jobs stays cheap."""
    jobs = cast(Table, Job.__table__)
    with store.read() as s:
        query = select(*jobs.c, Tenant.name.label("tenant_name")).join(
            Tenant, Tenant.id == jobs.c.tenant_id
        )
        if tenant is not None:
            query = query.where(jobs.c.tenant_id == visible_tenant(s, caller, tenant).id)
        elif not caller.is_operator:
            query = query.where(jobs.c.tenant_id == caller.tenant_id)
        if state:
            query = query.where(jobs.c.state.in_(state))
        if name:
            query = query.where(jobs.c.name == name)
        if kind:
            query = query.where(jobs.c.kind == kind)
        if cursor:
            query = query.where(jobs.c.id < cursor)
        rows = s.execute(query.order_by(jobs.c.id.desc()).limit(limit + 1)).all()
    items = [job_out(row, row.tenant_name) for row in rows[:limit]]
    page = Page[JobOut].model_construct(
        items=items, next_cursor=items[-1].id if len(rows) > limit else None
    )
    return Response(page.model_dump_json(), media_type=JSON)


@router.get("/jobs/{ref}")
def describe_job(ref: str, caller: Caller, store: StoreDep) -> JobDetail:
    with store.read() as s:
        job = visible_job(s, caller, ref)
        tenant = s.get(Tenant, job.tenant_id)
        tasks = s.scalars(
            select(Task).where(Task.job_id == job.id).order_by(Task.attempt, Task.rank)
        )
        events = s.scalars(select(Event).where(Event.object_id == job.id).order_by(Event.id))
        return JobDetail(
            **job_out(job, tenant.name if tenant else "").model_dump(),
            tasks=[TaskOut.model_validate(t) for t in tasks],
            events=[EventOut.model_validate(e) for e in events],
        )


@router.post("/jobs/{ref}/stop")
def stop_job(ref: str, caller: Caller, store: StoreDep, request: Request) -> JobOut:
    """Asks the job's tasks to checkpoint and exit (SIGTERM, SIGKILL after the grace period)."""
    require(caller, "operator", "admin", "member")
    with store.write() as s:
        job = visible_job(s, caller, ref)
        request_stop(s, job, "stop requested")
        tenant = s.get(Tenant, job.tenant_id)
        out = job_out(job, tenant.name if tenant else "")
    request.app.state.wake()
    return out


@router.get("/jobs/{ref}/logs")
def job_logs(
    ref: str,
    caller: Caller,
    store: StoreDep,
    request: Request,
    rank: Annotated[int, Query(ge=0, le=MAX_NODES_PER_JOB)] = 0,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> LogChunk:
    """A chunk of a task's output from `offset` (or from its last `tail` lines); `done` once
    the job ended and all was read."""
    with store.read() as s:
        job = visible_job(s, caller, ref)
        if rank >= job.nodes:
            raise ApiError(422, f"rank must be < {job.nodes}", field="rank")
    path = request.app.state.settings.logs_dir / job.id / f"rank-{rank}.log"
    if tail is not None:
        offset = tail_offset(path, tail)
    data = b""
    if path.exists():
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(MAX_LOG_CHUNK)
    done = JobState(job.state).terminal and len(data) < MAX_LOG_CHUNK
    return LogChunk(data=data.decode("utf-8", "replace"), offset=offset + len(data), done=done)


@router.post("/jobs/{ref}/metrics", status_code=201)
def post_metrics(ref: str, body: MetricsIn, caller: Caller, store: StoreDep) -> dict[str, int]:
    """Training runtimes report progress here with their job token."""
    with store.write() as s:
        job = visible_job(s, caller, ref)
        record_metrics(s, job, body.step, body.metrics)
    return {"step": body.step}


@router.get("/jobs/{ref}/metrics")
def get_metrics(
    ref: str, caller: Caller, store: StoreDep, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
) -> list[dict[str, float]]:
    with store.read() as s:
        job = visible_job(s, caller, ref)
        rows = s.scalars(
            select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.id).limit(limit)
        )
        return [{"step": r.step, **r.values} for r in rows]
