"""Deployments (replicas, traffic, tokens; deploy, scale, delete), the chat playground that
streams through the gateway's /v1 with the signed-in key, and models."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from rainier.web.client import Api, ApiFailure
from rainier.web.core import Changing, ConsoleRoute, Signed, api, form_of, render
from rainier.web.formats import parse_time

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
WINDOW = timedelta(minutes=5)
MAX_PROMPT_CHARS = 32_000
MAX_PLAYGROUND_TOKENS = 512


async def _traffic(client: Api, dep: dict[str, Any]) -> dict[str, Any]:
    """Requests per minute and tokens over the last few minutes, from the metered requests."""
    since = datetime.now(UTC) - WINDOW
    page = await client.get(f"/api/v1/deployments/{dep['id']}/usage", limit=10000)
    recent = [r for r in page["items"] if (parse_time(r["at"]) or since) > since]
    return {
        "requests_per_min": len(recent) / (WINDOW.total_seconds() / 60),
        "input_tokens": sum(r["input_tokens"] for r in page["items"]),
        "output_tokens": sum(r["output_tokens"] for r in page["items"]),
        "requests": len(page["items"]),
        "capped": page["next_cursor"] is not None,
    }


async def _deployments_page(
    request: Request, client: Api, status: int = 200, **values: Any
) -> Response:
    deployments = (await client.get("/api/v1/deployments"))["items"]
    rows = [{"dep": d, "traffic": await _traffic(client, d)} for d in deployments]
    models = (await client.get("/api/v1/models", limit=200))["items"]
    return render(request, "deployments.html", status, rows=rows, models=models, **values)


@router.get("/deployments")
async def deployments(request: Request, session: Signed) -> Response:
    return await _deployments_page(request, api(request, session))


def _replicas(form: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("min", "max"):
        value = form.get(key, "").strip()
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


@router.post("/deployments")
async def deploy(request: Request, session: Changing) -> Response:
    form = await form_of(request)
    doc: dict[str, Any] = {
        "kind": "Deployment",
        "name": form.get("name", ""),
        "model": form.get("model", ""),
        "replicas": _replicas(form),
    }
    client = api(request, session)
    try:
        await client.post("/api/v1/deployments", doc)
    except ApiFailure as exc:
        if exc.status >= 500:
            raise
        return await _deployments_page(request, client, exc.status, error=exc.message, form=form)
    return RedirectResponse(f"/deployments/{doc['name']}", status_code=303)


@router.get("/deployments/{ref}")
async def deployment(ref: str, request: Request, session: Signed) -> Response:
    client = api(request, session)
    dep = await client.get(f"/api/v1/deployments/{ref}")
    return render(request, "deployment.html", dep=dep, traffic=await _traffic(client, dep))


@router.get("/deployments/{ref}/live")
async def deployment_live(ref: str, request: Request, session: Signed) -> Response:
    """The parts of a deployment's page that change: replicas and traffic."""
    client = api(request, session)
    dep = await client.get(f"/api/v1/deployments/{ref}")
    return render(request, "deployment_live.html", dep=dep, traffic=await _traffic(client, dep))


@router.post("/deployments/{ref}/scale")
async def scale(ref: str, request: Request, session: Changing) -> Response:
    client = api(request, session)
    dep = await client.get(f"/api/v1/deployments/{ref}")
    spec = {**dep["spec"], "tenant": dep["tenant"], "replicas": _replicas(await form_of(request))}
    await client.post("/api/v1/deployments", spec)
    return RedirectResponse(f"/deployments/{dep['name']}", status_code=303)


@router.post("/deployments/{ref}/delete")
async def delete(ref: str, request: Request, session: Changing) -> Response:
    await api(request, session).delete(f"/api/v1/deployments/{ref}")
    return RedirectResponse("/deployments", status_code=303)


@router.post("/deployments/{ref}/chat")
async def chat(ref: str, request: Request, session: Changing) -> Response:
    """Relays a streamed chat completion from the gateway, event by event, to the page."""
    raw = await request.body()
    if len(raw) > MAX_PROMPT_CHARS * 4:
        return JSONResponse({"message": f"messages: at most {MAX_PROMPT_CHARS} characters"}, 413)
    try:
        body = json.loads(raw or b"{}")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"message": "messages: send a non-empty list of chat messages"}, 422)
    if len(json.dumps(messages)) > MAX_PROMPT_CHARS:
        return JSONResponse({"message": f"messages: at most {MAX_PROMPT_CHARS} characters"}, 422)
    client = api(request, session)
    try:
        dep = await client.get(f"/api/v1/deployments/{ref}")
    except ApiFailure as exc:
        return JSONResponse({"message": exc.message}, exc.status)
    request_body = {
        "model": dep["name"],
        "messages": messages,
        "stream": True,
        "max_tokens": body.get("max_tokens", 64),
        "temperature": body.get("temperature", 0.0),
    }
    if type(request_body["max_tokens"]) is int:  # anything else: the gateway says what is wrong
        request_body["max_tokens"] = min(request_body["max_tokens"], MAX_PLAYGROUND_TOKENS)
    stream = client.stream("/v1/chat/completions", request_body)
    try:
        first = await anext(stream)
    except ApiFailure as exc:
        return JSONResponse({"message": exc.message}, exc.status)
    except StopAsyncIteration:
        first = b""

    async def relay() -> Any:
        yield first
        async for chunk in stream:
            yield chunk

    return StreamingResponse(
        relay(), media_type="text/event-stream", headers={"cache-control": "no-store"}
    )


@router.get("/models")
async def models(request: Request, session: Signed) -> Response:
    items = (await api(request, session).get("/api/v1/models", limit=1000))["items"]
    return render(request, "models.html", models=items)
