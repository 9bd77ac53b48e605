"""The operator's pages: the fleet as its topology, the queue across tenants, tenants and
their contracts, events, and the simulator's reports."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from rainier.store.lifecycle import JobState
from rainier.web.client import Api
from rainier.web.core import ConsoleRoute, PageRefused, Signed, api, render, require_role
from rainier.web.pages_tenant import live_jobs
from rainier.web.views import fleet, queue

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


async def _all(client: Api, path: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.get(path, limit=1000, cursor=cursor, **params)
        out.extend(page["items"])
        if not (cursor := page.get("next_cursor")):
            return out


@router.get("/fleet")
async def fleet_page(request: Request, session: Signed) -> Response:
    require_role(session, "operator")
    client = api(request, session)
    nodes = await _all(client, "/api/v1/nodes")
    jobs = await live_jobs(client)
    zones = fleet(nodes, jobs)
    down = [n for n in nodes if not n.get("schedulable", True)]
    chips = sum(int(n["chips"]) for n in nodes)
    used = sum(int(n.get("used_chips", 0)) for n in nodes)
    tenants = sorted({j["tenant"] for j in jobs})
    return render(
        request, "fleet.html", zones=zones, down=down, chips=chips, used=used, tenants=tenants
    )


@router.get("/queue")
async def queue_page(request: Request, session: Signed) -> Response:
    require_role(session, "operator")
    client = api(request, session)
    jobs = await live_jobs(client) + await _all(
        client, "/api/v1/jobs", state=JobState.PENDING.value
    )
    contracts = await _all(client, "/api/v1/contracts")
    return render(request, "queue.html", tenants=queue(jobs, contracts))


@router.get("/tenants")
async def tenants_page(request: Request, session: Signed) -> Response:
    require_role(session, "operator")
    client = api(request, session)
    tenants = await _all(client, "/api/v1/tenants")
    contracts = await _all(client, "/api/v1/contracts")
    statuses = {
        c["name"]: await client.get(f"/api/v1/contracts/{c['name']}/status") for c in contracts
    }
    return render(request, "tenants.html", tenants=tenants, contracts=contracts, statuses=statuses)


@router.get("/events")
async def events_page(request: Request, session: Signed) -> Response:
    q = request.query_params
    events = await api(request, session).get(
        "/api/v1/events", kind=q.get("kind") or None, object=q.get("object") or None, limit=200
    )
    return render(request, "events.html", events=events["items"], kind=q.get("kind", ""))


@router.get("/reports")
async def reports_page(request: Request, session: Signed) -> Response:
    require_role(session, "operator")
    root = request.app.state.settings.home / "reports"
    found = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            page = folder / "report.html"
            if REPORT_NAME.match(folder.name) and page.is_file():
                found.append({"name": folder.name, "modified": page.stat().st_mtime})
    return render(request, "reports.html", reports=found, root=root)


@router.get("/reports/{name}")
async def report(name: str, request: Request, session: Signed) -> Response:
    """A report `rainier sim run --report` wrote under RAINIER_HOME/reports, shown as it is,
    in a sandbox: it is a self-contained page, and gets no script and no cookie."""
    require_role(session, "operator")
    if not REPORT_NAME.match(name):
        raise PageRefused(404, f"report {name!r} not found")
    page = request.app.state.settings.home / "reports" / name / "report.html"
    if not page.is_file():
        raise PageRefused(404, f"report {name!r} not found")
    return HTMLResponse(
        page.read_text(encoding="utf-8", errors="replace"),
        headers={
            "content-security-policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
            "cache-control": "no-store",
        },
    )
