"""Usage, statements, contract status, FOCUS export and spend alerts, read from the ledger.

Every view is a sum over `usage_lines` selected by an index (contract or tenant, then period
start), folded by the pure functions of `rainier.metering`: the API shows what they compute.
"""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.accounting.contract_lookup import contract_terms
from rainier.accounting.ledger_rows import iter_lines, select_lines
from rainier.accounting.webhooks import webhook_secret
from rainier.api.auth import Caller, Principal
from rainier.api.deps import StoreDep, visible_tenant
from rainier.api.errors import ApiError, not_found
from rainier.metering import (
    usage_by,
    write_focus_csv,
    write_lines_csv,
)
from rainier.metering.periods import month_bounds
from rainier.services import billing
from rainier.spec import ContractSpec
from rainier.spec_stored import load_stored
from rainier.store.tables import Contract, Deployment, Event, Job, utcnow

router = APIRouter(prefix="/api/v1", tags=["usage"])
Format = Literal["json", "csv"]


def instant(value: str | None, what: str) -> datetime | None:
    """A date (midnight UTC) or an ISO 8601 instant (UTC when no zone is given)."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # an instant near the ends of the calendar may have no UTC equivalent
        return at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ApiError(
            422, f"{what} must be a date or an ISO 8601 time, not {value!r}", what
        ) from None


def visible_contract(s: Session, caller: Principal, name: str) -> Contract:
    row = s.scalars(select(Contract).where(Contract.name == name)).one_or_none()
    if row is None or not caller.sees_tenant(row.tenant_id):
        raise not_found("contract", name)
    return row


def _csv(text: str, filename: str) -> Response:
    return Response(
        text,
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


class UsageGroup(BaseModel):
    group: str
    unit: str
    quantity: Decimal
    amount_usd: Decimal
    lines: int


class UsageOut(BaseModel):
    tenant: str | None
    since: datetime | None
    until: datetime | None
    by: str
    groups: list[UsageGroup]
    total_usd: Decimal


@router.get("/usage", response_model=None)
def get_usage(
    caller: Caller,
    store: StoreDep,
    tenant: str | None = None,
    since: str | None = None,
    until: str | None = None,
    by: Literal["flavor", "job", "day", "model", "kind"] = "flavor",
    format: Format = "json",
) -> UsageOut | Response:
    """Usage of a tenant (the caller's own by default; an operator without one sees all)."""
    start, end = instant(since, "since"), instant(until, "until")
    with store.read() as s:
        name = None
        if tenant is not None or not caller.is_operator:
            name = visible_tenant(s, caller, tenant).name
        lines = list(iter_lines(s, select_lines(tenant=name, since=start, until=end)))
    totals = usage_by(lines, by)
    groups = [
        UsageGroup(group=g, unit=u, quantity=t.quantity, amount_usd=t.amount_usd, lines=t.lines)
        for (g, u), t in totals.items()
    ]
    if format == "csv":
        buf = io.StringIO()
        buf.write(f"{by},unit,quantity,amount_usd,lines\n")
        for g in groups:
            buf.write(f"{g.group},{g.unit},{g.quantity:f},{g.amount_usd:f},{g.lines}\n")
        return _csv(buf.getvalue(), f"usage-{name or 'all'}.csv")
    return UsageOut(
        tenant=name,
        since=start,
        until=end,
        by=by,
        groups=groups,
        total_usd=sum((line.amount_usd for line in lines), Decimal(0)),
    )


class StatusOut(BaseModel):
    contract: str
    tenant: str
    term_start: datetime
    term_end: datetime
    at: datetime
    committed_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    burn_usd_per_day: Decimal
    reached_at: datetime | None
    projected_reach_at: datetime | None
    projected_spend_at_end_usd: Decimal
    projected_shortfall_usd: Decimal
    lines: int


@router.get("/contracts/{name}/status")
def get_status(name: str, caller: Caller, store: StoreDep) -> StatusOut:
    """Committed vs spent, the burn rate and where it leads by the term's end."""
    now = utcnow()
    with store.read() as s:
        row = visible_contract(s, caller, name)
        terms = contract_terms(row)
        status, lines = billing.status(s, row, now)
    return StatusOut(
        **dataclasses.asdict(status) | {"contract": row.name},
        tenant=terms.tenant,
        term_start=terms.start,
        term_end=terms.end,
        lines=lines,
    )


class GroupOut(BaseModel):
    kind: str
    sku: str
    unit: str
    quantity: Decimal
    amount_usd: Decimal
    lines: int


class CoverageOut(BaseModel):
    flavor: str
    reserved_chip_s: Decimal
    used_chip_s: Decimal
    within_guarantee_chip_s: Decimal
    beyond_guarantee_chip_s: Decimal
    unused_chip_s: Decimal


class StatementOut(BaseModel):
    tenant: str
    contract: str
    month: str
    period_start: datetime
    period_end: datetime
    groups: list[GroupOut]
    line_count: int
    total_usd: Decimal
    invoice_total_usd: Decimal
    committed_usd: Decimal
    drawn_before_usd: Decimal
    drawn_in_period_usd: Decimal
    remaining_usd: Decimal
    coverage: list[CoverageOut]


def _month(value: str | None) -> tuple[int, int]:
    if value is None:
        now = utcnow()
        return now.year, now.month
    try:
        year, month = (int(p) for p in value.split("-"))
        month_bounds(year, month)
    except ValueError:
        raise ApiError(422, f"month must be YYYY-MM, not {value!r}", "month") from None
    return year, month


@router.get("/contracts/{name}/statement", response_model=None)
def get_statement(
    name: str,
    caller: Caller,
    store: StoreDep,
    month: Annotated[str | None, Query(description="YYYY-MM; this month by default")] = None,
    format: Format = "json",
) -> StatementOut | Response:
    """One month of a contract: its lines grouped, totals, and the commitment drawn down."""
    year, mon = _month(month)
    start, end = month_bounds(year, mon)
    with store.read() as s:
        row = visible_contract(s, caller, name)
        if format == "csv":
            buf = io.StringIO()
            write_lines_csv(
                iter_lines(s, select_lines(contract=row.name, since=start, until=end)), buf
            )
            return _csv(buf.getvalue(), f"{row.name}-{year:04d}-{mon:02d}.csv")
        st = billing.statement(s, row, year, mon)
    data: dict[str, Any] = dataclasses.asdict(st)
    return StatementOut(**data, month=f"{year:04d}-{mon:02d}")


@router.get("/contracts/{name}/burndown.png", response_class=Response)
def get_burndown(name: str, caller: Caller, store: StoreDep) -> Response:
    from rainier.metering.chart import burn_down_png

    with store.read() as s:
        row = visible_contract(s, caller, name)
        terms = contract_terms(row)
        lines = list(iter_lines(s, select_lines(contract=row.name)))
    return Response(burn_down_png(terms, lines, utcnow()), media_type="image/png")


class WebhookOut(BaseModel):
    contract: str
    url: str | None
    secret: str
    signature_header: str


@router.get("/contracts/{name}/webhook")
def get_webhook(name: str, caller: Caller, store: StoreDep) -> WebhookOut:
    """Where spend alerts go and the secret that signs them (HMAC-SHA256, `t=...,v1=...`)."""
    with store.read() as s:
        row = visible_contract(s, caller, name)
    return WebhookOut(
        contract=row.name,
        url=load_stored(ContractSpec, row.spec).alert_webhook_url,
        secret=webhook_secret(store, row.name),
        signature_header="Rainier-Signature",
    )


@router.get("/billing/focus", response_class=Response)
def get_focus(
    caller: Caller,
    store: StoreDep,
    contract: str | None = None,
    tenant: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """Ledger lines as FinOps FOCUS 1.0 CSV: a tenant's own, or everything for an operator."""
    start, end = instant(since, "since"), instant(until, "until")
    with store.read() as s:
        contract_name = tenant_name = None
        if contract is not None:
            contract_name = visible_contract(s, caller, contract).name
        elif tenant is not None or not caller.is_operator:
            tenant_name = visible_tenant(s, caller, tenant).name
        query = select_lines(contract=contract_name, tenant=tenant_name, since=start, until=end)
        buf = io.StringIO()
        write_focus_csv(iter_lines(s, query), buf)
    return _csv(buf.getvalue(), "focus.csv")


def _visible_object(s: Session, caller: Principal, ref: str) -> str:
    """The id events are kept under for `ref` (a contract's name, or an object's id); 404 for
    what the caller may not see, whether it exists or not. Operators see every id."""
    found = s.scalars(select(Contract).where(Contract.name == ref)).one_or_none()
    if found is not None and caller.sees_tenant(found.tenant_id):
        return found.id
    if caller.is_operator:
        return ref
    for table in (Contract, Job, Deployment):
        tenant_id = s.scalar(select(table.tenant_id).where(table.id == ref))
        if tenant_id is not None and caller.sees_tenant(tenant_id):
            return ref
    raise not_found("object", ref)


class EventRow(BaseModel):
    object_id: str
    at: datetime
    kind: str
    message: str


class EventsOut(BaseModel):
    items: list[EventRow]


@router.get("/events")
def get_events(
    caller: Caller,
    store: StoreDep,
    object: Annotated[str | None, Query(description="an object id, or a contract name")] = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventsOut:
    """Events, newest first; spend alerts are kind `alert` on their contract. An `object` the
    caller may not see is not found, exactly as one that does not exist."""
    with store.read() as s:
        query = select(Event)
        if object is not None:
            object_id = _visible_object(s, caller, object)
            query = query.where(Event.object_id == object_id)
        if not caller.is_operator:
            query = query.where(Event.tenant_id == caller.tenant_id)
        if kind is not None:
            query = query.where(Event.kind == kind)
        rows = s.scalars(query.order_by(Event.id.desc()).limit(limit)).all()
    return EventsOut(
        items=[
            EventRow(object_id=e.object_id, at=e.at, kind=e.kind, message=e.message) for e in rows
        ]
    )
