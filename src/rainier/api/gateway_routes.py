"""The gateway's routes: `/v1/models` on the API router, and the two hot routes answered ahead
of the framework (`FastPath`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rainier.api.gateway import Gateway
from rainier.api.gateway_errors import GatewayError


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.gateway = Gateway(app.state.store, app.state.auth, app.state.metrics)
    try:
        yield
    finally:
        await app.state.gateway.close()


router = APIRouter(prefix="/v1", tags=["gateway"], lifespan=_lifespan)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.get("/models")
async def list_models(request: Request) -> Response:
    try:
        gateway = _gateway(request)
        caller = await gateway.caller(request)
        data = await run_in_threadpool(gateway.models, caller.tenant_id or "", caller.tenant or "")
    except GatewayError as exc:
        return exc.response()
    return JSONResponse({"object": "list", "data": data})


@router.get("/models/{name}")
async def get_model(name: str, request: Request) -> Response:
    try:
        gateway = _gateway(request)
        caller = await gateway.caller(request)
        target = await gateway.target(caller, name)
        cards = await run_in_threadpool(
            gateway.models, caller.tenant_id or "", caller.tenant or "", target.name
        )
    except GatewayError as exc:
        return exc.response()
    if not cards:
        return GatewayError(
            404, f"The model `{name}` does not exist.", code="model_not_found"
        ).response()
    return JSONResponse(cards[0])


async def completions(request: Request) -> Response:
    try:
        return await _gateway(request).proxy(request, "/v1/completions")
    except GatewayError as exc:
        return exc.response()


async def chat_completions(request: Request) -> Response:
    try:
        return await _gateway(request).proxy(request, "/v1/chat/completions")
    except GatewayError as exc:
        return exc.response()


# The two hot routes are plain Starlette routes: they read the raw request themselves, and
# FastAPI's parameter resolution and response handling would only add to every request.
HOT_ROUTES = {"/v1/completions": completions, "/v1/chat/completions": chat_completions}
for _path, _endpoint in HOT_ROUTES.items():
    router.routes.append(Route(_path, _endpoint, methods=["POST"]))


class FastPath:
    """Answers the hot routes ahead of the framework's exception middleware and route
    matching, which walk every router for every request: at a gateway's latencies that is a
    measurable share. Other requests, and anything a handler raises, go on as usual."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = HOT_ROUTES.get(scope["path"])
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
