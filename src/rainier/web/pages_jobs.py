"""Jobs: the list (filtered by state, paged by the API's cursor, refreshed in place), one job
(state, why it waits, tasks, events, per-rank logs followed live, training charts), submit,
stop and run again."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from rainier.store.lifecycle import ALL_JOB_STATES, TERMINAL_JOB_STATES
from rainier.web.charts import metric_charts
from rainier.web.client import ApiFailure
from rainier.web.core import Changing, ConsoleRoute, Signed, api, form_of, render
from rainier.web.session import Session

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PAGE_SIZE = 50
STATES = ALL_JOB_STATES
TERMINAL = TERMINAL_JOB_STATES
EXAMPLE = """kind: Job
name: hello
flavor: cpu
chips_per_node: 1
command: python3 -c "print('hello from rank 0')"
"""


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    state = q.get("state", "")
    return {
        "state": state if state in STATES else "",
        "cursor": q.get("cursor", "")[:64],
        "tenant": q.get("tenant", "")[:64],
    }


async def _page(request: Request, session: Session) -> dict[str, Any]:
    f = _filters(request)
    page = await api(request, session).get(
        "/api/v1/jobs",
        state=f["state"] or None,
        tenant=f["tenant"] or None,
        cursor=f["cursor"] or None,
        limit=PAGE_SIZE,
        kind="job",
    )
    return {
        "jobs": page["items"],
        "next_cursor": page["next_cursor"],
        "filters": f,
        "states": STATES,
    }


@router.get("/jobs")
async def jobs_page(request: Request, session: Signed) -> Response:
    return render(request, "jobs.html", **await _page(request, session), example=EXAMPLE)


@router.get("/jobs/rows")
async def jobs_rows(request: Request, session: Signed) -> Response:
    return render(request, "jobs_rows.html", **await _page(request, session))


@router.post("/jobs")
async def submit(request: Request, session: Changing) -> Response:
    text = (await form_of(request)).get("document", "")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return await _refused(request, session, text, f"{where}not valid YAML")
    if not isinstance(doc, dict):
        return await _refused(
            request, session, text, "the document must be a mapping (kind: Job, ...)"
        )
    doc.setdefault("kind", "Job")
    try:
        job = await api(request, session).post("/api/v1/jobs", doc)
    except ApiFailure as exc:
        if exc.status >= 500:
            raise
        return await _refused(request, session, text, exc.message, exc.status)
    return RedirectResponse(f"/jobs/{job['id']}", status_code=303)


async def _refused(
    request: Request, session: Session, text: str, message: str, status: int = 422
) -> Response:
    values = await _page(request, session)
    return render(request, "jobs.html", status, **values, example=text, submit_error=message)


@router.get("/jobs/{ref}")
async def job_page(ref: str, request: Request, session: Signed) -> Response:
    client = api(request, session)
    job = await client.get(f"/api/v1/jobs/{ref}")
    metrics = await client.get(f"/api/v1/jobs/{job['id']}/metrics", limit=2000)
    return render(
        request,
        "job.html",
        job=job,
        charts=metric_charts(metrics),
        terminal=job["state"] in TERMINAL,
        spec_yaml=yaml.safe_dump(job["spec"], sort_keys=False),
    )


@router.get("/jobs/{ref}/live")
async def job_live(ref: str, request: Request, session: Signed) -> Response:
    """The parts of a job's page that change while it runs: state, reason, tasks, events."""
    client = api(request, session)
    job = await client.get(f"/api/v1/jobs/{ref}")
    return render(request, "job_live.html", job=job, terminal=job["state"] in TERMINAL)


@router.get("/jobs/{ref}/charts")
async def job_charts(ref: str, request: Request, session: Signed) -> Response:
    client = api(request, session)
    job = await client.get(f"/api/v1/jobs/{ref}")
    metrics = await client.get(f"/api/v1/jobs/{job['id']}/metrics", limit=2000)
    return render(
        request,
        "job_charts.html",
        job=job,
        charts=metric_charts(metrics),
        terminal=job["state"] in TERMINAL,
    )


@router.get("/jobs/{ref}/logs")
async def job_logs(ref: str, request: Request, session: Signed) -> Response:
    """A chunk of one rank's output from `offset`, as the API gives it; the page appends it."""
    q = request.query_params
    rank, offset = q.get("rank", "0"), q.get("offset", "0")
    if not rank.isdigit() or not offset.isdigit():
        return JSONResponse({"message": "rank and offset must be whole numbers"}, 422)
    try:
        chunk = await api(request, session).get(
            f"/api/v1/jobs/{ref}/logs", rank=rank, offset=offset
        )
    except ApiFailure as exc:
        return JSONResponse({"message": exc.message}, exc.status)
    return JSONResponse(chunk, headers={"cache-control": "no-store"})


@router.post("/jobs/{ref}/stop")
async def stop(ref: str, request: Request, session: Changing) -> Response:
    job = await api(request, session).post(f"/api/v1/jobs/{ref}/stop")
    return RedirectResponse(f"/jobs/{job['id']}", status_code=303)


@router.post("/jobs/{ref}/rerun")
async def rerun(ref: str, request: Request, session: Changing) -> Response:
    """Submits the job's own document again, as a new job."""
    client = api(request, session)
    job = await client.get(f"/api/v1/jobs/{ref}")
    spec = {**job["spec"], "tenant": job["tenant"]}
    again = await client.post("/api/v1/jobs", spec)
    return RedirectResponse(f"/jobs/{again['id']}", status_code=303)
