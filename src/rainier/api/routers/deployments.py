"""Deployments: apply, list, describe and delete; the controller in `control/deployments.py`
does the rest."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rainier.api.auth import Caller, Principal, require
from rainier.api.deps import StoreDep, visible_tenant
from rainier.api.errors import ApiError, not_found
from rainier.api.routers.models import model_roots
from rainier.api.schemas import MAX_OFFSET, EventOut, Page
from rainier.control.deployments import ModelRefError
from rainier.control.ownership import NotOwnedError, owned_model_dir
from rainier.services import deployments as service
from rainier.spec import DeploymentSpec
from rainier.store.lifecycle import LIVE_JOB_STATES, DeploymentState, JobState, deployment_state
from rainier.store.tables import Deployment, Event, Job, ReplicaEndpoint, Tenant, TokenUsageRecord

router = APIRouter(prefix="/api/v1", tags=["deployments"])


class ReplicaOut(BaseModel):
    id: str
    name: str
    state: JobState
    reason: str
    attempt: int
    restarts: int
    url: str | None = None
    ready: bool = False
    running: int = 0
    waiting: int = 0


class DeploymentOut(BaseModel):
    id: str
    name: str
    tenant: str
    model: str
    model_path: str
    revision: int
    state: DeploymentState
    desired_replicas: int
    ready_replicas: int
    replicas: int
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class GatewayFigures(BaseModel):
    """What this server process's gateway measured for the deployment since it started (each
    process of `RAINIER_WORKERS` counts its own; Prometheus sums them from `/metrics`)."""

    requests: int
    mean_latency_s: float | None


class DeploymentDetail(DeploymentOut):
    replica_list: list[ReplicaOut]
    events: list[EventOut]
    gateway: GatewayFigures


class TokenUsageOut(BaseModel):
    request_id: str
    deployment: str
    model: str
    input_tokens: int
    output_tokens: int
    at: datetime


def _replicas(s: Session, dep_ids: list[str]) -> dict[str, list[ReplicaOut]]:
    if not dep_ids:
        return {}
    rows = s.execute(
        select(Job, ReplicaEndpoint)
        .outerjoin(ReplicaEndpoint, ReplicaEndpoint.job_id == Job.id)
        .where(Job.deployment_id.in_(dep_ids), Job.state.in_(LIVE_JOB_STATES))
        .order_by(Job.id)
    ).all()
    out: dict[str, list[ReplicaOut]] = {}
    for job, e in rows:
        out.setdefault(job.deployment_id or "", []).append(
            ReplicaOut(
                id=job.id,
                name=job.name,
                state=job.state,
                reason=job.reason,
                attempt=job.attempt,
                restarts=job.restarts,
                url=e.url if e is not None else None,
                ready=bool(e.ready) if e is not None else False,
                running=e.running if e is not None else 0,
                waiting=e.waiting if e is not None else 0,
            )
        )
    return out


def deployment_out(row: Deployment, tenant: str, replicas: list[ReplicaOut]) -> DeploymentOut:
    ready = sum(r.ready for r in replicas)
    return DeploymentOut(
        id=row.id,
        name=row.name,
        tenant=tenant,
        model=row.model,
        model_path=row.model_path,
        revision=row.revision,
        state=deployment_state(row.desired_replicas, ready),
        desired_replicas=row.desired_replicas,
        ready_replicas=ready,
        replicas=len(replicas),
        spec=row.spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def visible_deployment(
    s: Session, caller: Principal, ref: str, tenant: str | None = None
) -> tuple[Deployment, Tenant]:
    """A deployment by name within a tenant (the caller's own by default) or by id; 404 for
    what the caller may not see."""
    row = None
    if tenant is not None or caller.tenant_id is not None:
        owner = visible_tenant(s, caller, tenant)
        row = s.scalars(
            select(Deployment).where(Deployment.tenant_id == owner.id, Deployment.name == ref)
        ).one_or_none()
    if row is None:
        row = s.get(Deployment, ref)
    if row is None or not caller.sees_tenant(row.tenant_id):
        raise not_found("deployment", ref)
    owner_row = s.get(Tenant, row.tenant_id)
    assert owner_row is not None
    return row, owner_row


@router.post("/deployments", status_code=201)
def apply(
    doc: DeploymentSpec, caller: Caller, store: StoreDep, request: Request, response: Response
) -> DeploymentOut:
    """Creates the deployment (201) or updates the one of that name in the tenant (200)."""
    require(caller, "operator", "admin", "member")
    roots = model_roots(request.app.state.settings)
    for tries_left in (1, 0):
        try:
            with store.write() as s:
                if doc.tenant is None and caller.tenant_id is None:
                    raise ApiError(
                        422, "an operator key must name the deployment's tenant", field="tenant"
                    )
                owner = visible_tenant(s, caller, doc.tenant)

                def owned(path: str, s: Session = s, owner: Tenant = owner) -> str:
                    try:
                        return owned_model_dir(s, roots, owner.id, owner.name, path).path
                    except NotOwnedError as exc:
                        raise ModelRefError(str(exc)) from None

                row, created = service.apply(s, owner.id, doc, owned)
                out = deployment_out(row, owner.name, _replicas(s, [row.id]).get(row.id, []))
            break
        except IntegrityError:
            if not tries_left:
                raise
    response.status_code = 201 if created else 200
    request.app.state.wake()
    _forget_targets(request)
    return out


def _forget_targets(request: Request) -> None:
    """The gateway caches deployments briefly; a change made here applies at once."""
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        gateway.forget_targets()


@router.get("/deployments")
def list_deployments(
    caller: Caller, store: StoreDep, tenant: str | None = None
) -> Page[DeploymentOut]:
    with store.read() as s:
        query = select(Deployment, Tenant.name).join(Tenant, Tenant.id == Deployment.tenant_id)
        if tenant is not None:
            query = query.where(Deployment.tenant_id == visible_tenant(s, caller, tenant).id)
        elif not caller.is_operator:
            query = query.where(Deployment.tenant_id == caller.tenant_id)
        rows = s.execute(query.order_by(Tenant.name, Deployment.name)).all()
        replicas = _replicas(s, [d.id for d, _ in rows])
        return Page(items=[deployment_out(d, t, replicas.get(d.id, [])) for d, t in rows])


@router.get("/deployments/{ref}")
def describe_deployment(
    ref: str, caller: Caller, store: StoreDep, request: Request, tenant: str | None = None
) -> DeploymentDetail:
    with store.read() as s:
        row, owner = visible_deployment(s, caller, ref, tenant)
        replicas = _replicas(s, [row.id]).get(row.id, [])
        events = s.scalars(select(Event).where(Event.object_id == row.id).order_by(Event.id))
        return DeploymentDetail(
            **deployment_out(row, owner.name, replicas).model_dump(),
            replica_list=replicas,
            events=[EventOut.model_validate(e) for e in events],
            gateway=_gateway_figures(request, owner.name, row.name),
        )


def _gateway_figures(request: Request, tenant: str, name: str) -> GatewayFigures:
    registry = request.app.state.metrics.registry
    labels = {"tenant": tenant, "deployment": name}
    count = registry.get_sample_value("rainier_gateway_request_duration_seconds_count", labels)
    total = registry.get_sample_value("rainier_gateway_request_duration_seconds_sum", labels)
    if not count:
        return GatewayFigures(requests=0, mean_latency_s=None)
    return GatewayFigures(requests=int(count), mean_latency_s=(total or 0.0) / count)


@router.delete("/deployments/{ref}")
def remove_deployment(
    ref: str, caller: Caller, store: StoreDep, request: Request, tenant: str | None = None
) -> dict[str, Any]:
    """Stops the replicas (each finishes its requests within its grace period)."""
    require(caller, "operator", "admin", "member")
    with store.write() as s:
        row, _ = visible_deployment(s, caller, ref, tenant)
        name = row.name
        stopped = service.delete(s, row)
    request.app.state.wake()
    _forget_targets(request)
    return {"name": name, "deleted": True, "replicas_stopping": stopped}


@router.get("/deployments/{ref}/usage")
def deployment_usage(
    ref: str,
    caller: Caller,
    store: StoreDep,
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
) -> Page[TokenUsageOut]:
    """Tokens metered per request, oldest first; `next_cursor` pages on."""
    with store.read() as s:
        row, _ = visible_deployment(s, caller, ref, tenant)
        query = select(TokenUsageRecord).where(TokenUsageRecord.deployment_id == row.id)
        if cursor is not None:
            query = query.where(TokenUsageRecord.id > cursor)
        records = s.scalars(query.order_by(TokenUsageRecord.id).limit(limit + 1)).all()
    items = [
        TokenUsageOut(
            request_id=r.request_id,
            deployment=r.deployment,
            model=r.model,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            at=r.at,
        )
        for r in records[:limit]
    ]
    more = len(records) > limit
    return Page(items=items, next_cursor=str(records[limit - 1].id) if more else None)
