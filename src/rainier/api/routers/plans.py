"""Before and while it runs: who am I, what would this job do, where does my quota stand."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from rainier.api.auth import Caller, require
from rainier.api.deps import StoreDep, visible_tenant
from rainier.api.errors import ApiError
from rainier.control.plan import QuotaRow, job_plan, quota_rows
from rainier.spec import JobSpec
from rainier.store.tables import ApiKey, Tenant, utcnow

router = APIRouter(prefix="/api/v1", tags=["plans"])


class WhoAmI(BaseModel):
    role: str
    tenant: str | None
    key_id: str | None
    key_prefix: str | None
    job_id: str | None


@router.get("/whoami")
def whoami(caller: Caller, store: StoreDep) -> WhoAmI:
    prefix = None
    if caller.key_id is not None:
        with store.read() as s:
            key = s.get(ApiKey, caller.key_id)
            prefix = key.prefix if key is not None else None
    return WhoAmI(
        role=caller.role,
        tenant=caller.tenant,
        key_id=caller.key_id,
        key_prefix=prefix,
        job_id=caller.job_id,
    )


class JobPlan(BaseModel):
    """The scheduler's answer for a job not yet submitted; nothing is written."""

    outcome: str
    runs_now: bool
    reason: str
    nodes: list[str]
    flavor: str
    chips: int
    guaranteed_chips: int
    borrowed_chips: int
    reservation_at: datetime | None
    preempts: list[str]
    contract: str | None
    list_usd_per_chip_hour: Decimal | None
    discount: Decimal | None
    usd_per_hour: Decimal | None
    max_duration_s: float | None
    estimated_total_usd: Decimal | None


@router.post("/plans")
def plan_job(doc: JobSpec, caller: Caller, store: StoreDep) -> JobPlan:
    """Where the job would run now, or why not (never fits, over the borrow limit, waits
    for a reservation at a time), its guaranteed vs borrowed (preemptible) chips, and its
    price per hour at the contract's rate, with a total when `max_duration_s` bounds it."""
    require(caller, "operator", "admin", "member")
    with store.read() as s:
        if doc.tenant is None and caller.tenant_id is None:
            raise ApiError(422, "an operator key must name the job's tenant", field="tenant")
        tenant = visible_tenant(s, caller, doc.tenant)
        return JobPlan.model_validate(job_plan(s, doc, tenant.id, tenant.name))


class QuotaPage(BaseModel):
    at: datetime
    items: list[QuotaRow]  # a dataclass of the plan core, validated and documented as is


@router.get("/quota")
def get_quota(caller: Caller, store: StoreDep, tenant: str | None = None) -> QuotaPage:
    """Per contract in force and flavor: guaranteed, in use, borrowed, borrowable now, and
    the commitment's burn. A tenant's key sees its own; an operator's every tenant's."""
    now = utcnow()
    with store.read() as s:
        if tenant is not None or not caller.is_operator:
            ids = [visible_tenant(s, caller, tenant).id]
        else:
            ids = list(s.scalars(select(Tenant.id)))
        rows = quota_rows(s, ids, now)
    return QuotaPage(at=now, items=rows)
