"""What a job's tasks tell the control plane over the network, with their job token.

- `PUT /api/v1/jobs/{id}/endpoints/{purpose}`: where a rank listens, a replica's serving port
  (`serve`) or the port rank 0 bound for its gang (`rendezvous`). `host` defaults to the
  address the request came from, which is the node as the control plane reaches it; it may
  only be that or the address the rank's node is registered with.
- `GET /api/v1/jobs/{id}/endpoints/{purpose}?rank=N`: what that rank registered in the job's
  current attempt (404 until it has): how the other ranks of a gang find rank 0.
- `POST /api/v1/jobs/{id}/logs?rank=N&attempt=K&offset=M`: a batch of a task's output (the
  raw bytes), starting at offset M of attempt K's output; answers how far it is stored.

A job token acts for its own job alone: another job's token, or an API key, cannot register
or ship anything for it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rainier.api.auth import Caller, Principal
from rainier.api.deps import StoreDep, visible_job
from rainier.api.errors import ApiError, conflict
from rainier.api.schemas import MAX_OFFSET, ErrorOut
from rainier.control.log_store import LogGap, LogSuperseded, TaskLogs
from rainier.control.task_endpoints import (
    ForeignHost,
    NotRegistrable,
    Purpose,
    lookup,
    register,
)
from rainier.limits import MAX_NODES_PER_JOB
from rainier.store.tables import Job

router = APIRouter(prefix="/api/v1", tags=["jobs"])
HOST_PATTERN = r"^[A-Za-z0-9.:\-\[\]%]+$"
MAX_LOG_BATCH = 4 << 20
STORED_OFFSET = "X-Stored-Offset"


class EndpointIn(BaseModel):
    rank: int = Field(0, ge=0, le=MAX_NODES_PER_JOB)
    port: int = Field(ge=1, le=65535)
    host: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=HOST_PATTERN,
        description="the rank's node's address (as registered for its node), or by default "
        "the address the request came from",
    )


class EndpointOut(BaseModel):
    job_id: str
    attempt: int
    rank: int
    purpose: Purpose
    host: str
    port: int
    url: str


class LogStored(BaseModel):
    offset: int


def own_job(caller: Principal, job_id: str) -> str:
    """The job a job token speaks for; anything else is refused."""
    if caller.role != "job":
        raise ApiError(403, "only the job's own token (RAINIER_TOKEN) may do this")
    if caller.job_id != job_id:
        raise ApiError(404, f"job {job_id!r} not found")
    return job_id


@router.put(
    "/jobs/{job_id}/endpoints/{purpose}",
    responses={409: {"model": ErrorOut, "description": "the job has ended, or has no such rank"}},
)
def put_endpoint(
    job_id: str,
    purpose: Purpose,
    body: EndpointIn,
    caller: Caller,
    store: StoreDep,
    request: Request,
) -> EndpointOut:
    """Registers where a rank of the caller's own job listens."""
    own_job(caller, job_id)
    peer = request.client.host if request.client else None
    try:
        found = register(store, job_id, purpose, body.rank, body.host, body.port, peer=peer)
    except NotRegistrable as exc:
        raise conflict(str(exc)) from None
    except ForeignHost as exc:
        raise ApiError(422, str(exc), field="host") from None
    return EndpointOut(**found.__dict__, url=found.url)


@router.get("/jobs/{job_id}/endpoints/{purpose}")
def get_endpoint(
    job_id: str,
    purpose: Purpose,
    caller: Caller,
    store: StoreDep,
    rank: Annotated[int, Query(ge=0, le=MAX_NODES_PER_JOB)] = 0,
    attempt: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> EndpointOut:
    """What a rank registered in `attempt` (the job's current one by default); 404 until it
    has."""
    with store.read() as s:
        visible_job(s, caller, job_id)
    found = lookup(store, job_id, purpose, rank, attempt)
    if found is None:
        raise ApiError(404, f"rank {rank} of job {job_id} has registered no {purpose} endpoint")
    return EndpointOut(**found.__dict__, url=found.url)


@router.post(
    "/jobs/{ref}/logs",
    response_model=LogStored,
    responses={
        409: {
            "model": ErrorOut,
            "description": "the batch would leave a gap: send again from `X-Stored-Offset`",
        },
        410: {"model": ErrorOut, "description": "a later attempt of the job has begun"},
    },
)
async def post_logs(
    ref: str,
    caller: Caller,
    store: StoreDep,
    request: Request,
    rank: Annotated[int, Query(ge=0, le=MAX_NODES_PER_JOB)],
    attempt: Annotated[int, Query(ge=0, le=1_000_000)],
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)],
) -> LogStored | JSONResponse:
    """Stores a batch of a task's output (the request's raw body). `ref` is the job's id
    (the path is the one `GET` reads logs at)."""
    job_id = own_job(caller, ref)
    data = await request.body()
    if len(data) > MAX_LOG_BATCH:
        raise ApiError(413, f"a batch is at most {MAX_LOG_BATCH} bytes", field="body")
    logs = TaskLogs(request.app.state.settings.logs_dir)

    def store_batch() -> int:
        with store.read() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise ApiError(404, f"job {job_id!r} not found")
            if rank >= job.nodes:
                raise ApiError(422, f"rank must be < {job.nodes}", field="rank")
            if attempt > job.attempt:
                raise ApiError(422, f"attempt must be <= {job.attempt}", field="attempt")
        return logs.append(job_id, rank, attempt, offset, data)

    try:
        stored = await run_in_threadpool(store_batch)
    except LogSuperseded as exc:
        raise ApiError(410, str(exc), field="attempt") from None
    except LogGap as exc:
        message = f"{exc}: send again from there"
        return JSONResponse(
            {"message": message, "problems": [{"field": "offset", "message": message}]},
            status_code=409,
            headers={STORED_OFFSET: str(exc.expected)},
        )
    return LogStored(offset=stored)
