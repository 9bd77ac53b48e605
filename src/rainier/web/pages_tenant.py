"""A tenant's overview (its contracts burning down, its chips), usage and bill, API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from rainier.store.lifecycle import PLACED_JOB_STATES, JobState
from rainier.web.charts import Chart, burn_down
from rainier.web.client import Api, ApiFailure
from rainier.web.core import Changing, ConsoleRoute, Signed, api, form_of, render, require_role
from rainier.web.formats import parse_time
from rainier.web.session import Session
from rainier.web.views import chips_by_flavor

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
USAGE_VIEWS = ("day", "kind", "job", "model", "flavor")
DAY_S = 86400.0


async def live_jobs(client: Api, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every running or stopping gang (training jobs and replicas), all pages."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.get(
            "/api/v1/jobs",
            state=[s.value for s in PLACED_JOB_STATES],
            tenant=tenant,
            limit=1000,
            cursor=cursor,
        )
        out.extend(page["items"])
        if not (cursor := page["next_cursor"]):
            return out


async def _burn_down(client: Api, contract: dict[str, Any], status: dict[str, Any]) -> Chart:
    start = parse_time(status["term_start"]) or datetime.now(UTC)
    end = parse_time(status["term_end"]) or start
    usage = await client.get(
        "/api/v1/usage", tenant=contract["tenant"], by="day", since=status["term_start"]
    )
    per_day: dict[str, Decimal] = {}
    for g in usage["groups"]:
        per_day[g["group"]] = per_day.get(g["group"], Decimal(0)) + Decimal(g["amount_usd"])
    spent, points = Decimal(0), []
    for day_iso, amount in sorted(per_day.items()):
        spent += amount
        day = datetime.fromisoformat(day_iso).replace(tzinfo=UTC)
        points.append(((day - start).total_seconds() / DAY_S + 1, float(spent)))
    now = parse_time(status["at"]) or datetime.now(UTC)
    projected = [
        ((now - start).total_seconds() / DAY_S, float(status["spent_usd"])),
        ((end - start).total_seconds() / DAY_S, float(status["projected_spend_at_end_usd"])),
    ]
    return burn_down(float(status["committed_usd"]), points, projected)


@router.get("/")
async def overview(request: Request, session: Signed) -> Response:
    if session.is_operator:
        return RedirectResponse("/fleet", status_code=303)
    client = api(request, session)
    contracts = (await client.get("/api/v1/contracts"))["items"]
    rows = []
    for contract in contracts:
        status = await client.get(f"/api/v1/contracts/{contract['name']}/status")
        rows.append(
            {
                "contract": contract,
                "status": status,
                "chart": await _burn_down(client, contract, status),
            }
        )
    jobs = await live_jobs(client)
    pending = await client.get("/api/v1/jobs", state=JobState.PENDING.value, limit=20)
    return render(
        request,
        "overview.html",
        contracts=rows,
        chips=chips_by_flavor(contracts, jobs),
        pending=pending["items"],
        running=[j for j in jobs if j["kind"] == "job"],
    )


@router.get("/usage")
async def usage(request: Request, session: Signed) -> Response:
    q = request.query_params
    by = q.get("by", "day")
    by = by if by in USAGE_VIEWS else "day"
    since, until, month = q.get("since", ""), q.get("until", ""), q.get("month", "")
    client = api(request, session)
    found = await client.get("/api/v1/usage", by=by, since=since, until=until)
    statements = []
    for contract in (await client.get("/api/v1/contracts"))["items"]:
        statements.append(
            await client.get(f"/api/v1/contracts/{contract['name']}/statement", month=month or None)
        )
    return render(
        request,
        "usage.html",
        usage=found,
        by=by,
        views=USAGE_VIEWS,
        since=since,
        until=until,
        month=month,
        statements=statements,
    )


@router.get("/usage/focus.csv")
async def focus(request: Request, session: Signed) -> Response:
    q = request.query_params
    answer = await api(request, session).request(
        "GET",
        "/api/v1/billing/focus",
        params={k: q[k] for k in ("since", "until", "contract") if q.get(k)},
    )
    return Response(
        answer.content,
        media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="focus.csv"'},
    )


async def _keys_page(
    request: Request, session: Session, status: int = 200, **values: Any
) -> Response:
    keys = await api(request, session).get("/api/v1/keys", limit=1000)
    return render(request, "keys.html", status, keys=keys["items"], **values)


@router.get("/keys")
async def keys(request: Request, session: Signed) -> Response:
    require_role(session, "operator", "admin")
    return await _keys_page(request, session)


@router.post("/keys")
async def create_key(request: Request, session: Changing) -> Response:
    """Creates a key and shows it this once; the API keeps only its hash."""
    require_role(session, "operator", "admin")
    form = await form_of(request)
    body: dict[str, Any] = {"name": form.get("name", ""), "role": form.get("role", "member")}
    if session.is_operator and form.get("tenant"):
        body["tenant"] = form["tenant"]
    try:
        created = await api(request, session).post("/api/v1/keys", body)
    except ApiFailure as exc:
        if exc.status >= 500:
            raise
        return await _keys_page(request, session, exc.status, error=exc.message)
    return await _keys_page(request, session, 201, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, session: Changing) -> Response:
    require_role(session, "operator", "admin")
    await api(request, session).delete(f"/api/v1/keys/{key_id}")
    return RedirectResponse("/keys", status_code=303)
