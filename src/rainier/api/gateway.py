"""The OpenAI-compatible gateway: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

A tenant's API key authenticates; `model` names one of the tenant's deployments (any other name,
another tenant's included, is "not found"). The request goes to the least-loaded ready replica
and the answer streams back as it comes. Every answered request is metered once: the replica's
`usage` is written to `token_usage` under the request id the gateway gave it. For streams the
gateway always asks the replica for the final usage chunk and drops it again when the client
did not ask for it. Errors follow OpenAI's shape, so OpenAI clients report them as usual.

When no replica is ready (starting, restarting, or the deployment sits at zero replicas, which
the request then wakes) the request waits up to `RAINIER_GATEWAY_WAIT_S` seconds. A request a
replica drops before answering goes to another replica. Rate limits are token buckets kept by
each server process, so N server processes admit up to N times a deployment's limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from rainier.api.auth import Authenticator, Principal
from rainier.control.deployments import MODEL_ENV
from rainier.spec import DeploymentSpec
from rainier.store.db import Store
from rainier.store.tables import (
    Deployment,
    Event,
    Job,
    ReplicaEndpoint,
    TokenUsageRecord,
    utcnow,
)

log = logging.getLogger("rainier.gateway")
DOWN_FOR_S = 5.0
TRIES = 3


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type_,
            code,
            param,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class Endpoint:
    job_id: str
    url: str
    load: int
    model: str


@dataclass(frozen=True)
class Target:
    id: str
    name: str
    tenant_id: str
    model: str
    rate_limit_rpm: int | None
    desired_replicas: int
    created_s: int
    endpoints: tuple[Endpoint, ...]


@dataclass
class TokenBucket:
    """`rpm` requests a minute, up to `rpm` at once after a quiet minute."""

    rpm: int
    tokens: float | None = None
    at: float = 0.0

    def take(self, now: float) -> float:
        """0 when a request may pass, else the seconds until one may."""
        rate = self.rpm / 60.0
        if self.tokens is None:
            self.tokens = float(self.rpm)
        else:
            self.tokens = min(float(self.rpm), self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


@dataclass(frozen=True)
class Metered:
    request_id: str
    target: Target


class Gateway:
    """One per server; its state (in-flight counts, rate buckets) lives in this process."""

    def __init__(self, store: Store, auth: Authenticator):
        self.store = store
        self.auth = auth
        self.wait_for_replica_s = float(os.environ.get("RAINIER_GATEWAY_WAIT_S", "60"))
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=2.0, read=600.0, write=60.0, pool=60.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        self.inflight: dict[str, int] = {}
        self.down_until: dict[str, float] = {}
        self.buckets: dict[str, TokenBucket] = {}

    async def close(self) -> None:
        await self.http.aclose()

    # -- who and what ----------------------------------------------------------------------

    async def caller(self, request: Request) -> Principal:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise GatewayError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        found = await run_in_threadpool(self.auth.resolve, secret.strip())
        if found is None:
            raise GatewayError(401, "invalid or revoked API key", code="invalid_api_key")
        if found.tenant_id is None:
            raise GatewayError(
                401, "this key belongs to no tenant: use a tenant's key", code="invalid_api_key"
            )
        return found

    def _target(self, tenant_id: str, name: str) -> Target | None:
        with self.store.read() as s:
            dep = s.scalars(
                select(Deployment).where(Deployment.tenant_id == tenant_id, Deployment.name == name)
            ).one_or_none()
            if dep is None:
                return None
            endpoints = s.execute(
                select(ReplicaEndpoint, Job.spec)
                .join(Job, Job.id == ReplicaEndpoint.job_id)
                .where(ReplicaEndpoint.deployment_id == dep.id, ReplicaEndpoint.ready.is_(True))
            ).all()
            doc = DeploymentSpec.model_validate(dep.spec)
            return Target(
                id=dep.id,
                name=dep.name,
                tenant_id=dep.tenant_id,
                model=dep.model,
                rate_limit_rpm=doc.rate_limit_rpm,
                desired_replicas=dep.desired_replicas,
                created_s=int(dep.created_at.timestamp()),
                endpoints=tuple(
                    Endpoint(
                        e.job_id,
                        e.url,
                        e.running + e.waiting,
                        str(spec.get("env", {}).get(MODEL_ENV) or dep.model),
                    )
                    for e, spec in endpoints
                ),
            )

    async def target(self, caller: Principal, name: str) -> Target:
        found = await run_in_threadpool(self._target, caller.tenant_id or "", name)
        if found is None:
            raise GatewayError(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return found

    def models(self, tenant_id: str, tenant: str) -> list[dict[str, Any]]:
        with self.store.read() as s:
            rows = s.scalars(
                select(Deployment)
                .where(Deployment.tenant_id == tenant_id)
                .order_by(Deployment.name)
            ).all()
            return [
                {
                    "id": d.name,
                    "object": "model",
                    "created": int(d.created_at.timestamp()),
                    "owned_by": tenant,
                }
                for d in rows
            ]

    # -- admission and choice --------------------------------------------------------------

    def admit(self, target: Target) -> None:
        rpm = target.rate_limit_rpm
        if rpm is None:
            self.buckets.pop(target.id, None)
            return
        bucket = self.buckets.get(target.id)
        if bucket is None or bucket.rpm != rpm:
            bucket = self.buckets[target.id] = TokenBucket(rpm)
        wait = bucket.take(time.monotonic())
        if wait > 0:
            raise GatewayError(
                429,
                f"Rate limit reached for {target.name}: {rpm} requests per minute. "
                f"Try again in {wait:.1f}s.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={
                    "retry-after": str(math.ceil(wait)),
                    "x-ratelimit-limit-requests": str(rpm),
                    "x-ratelimit-remaining-requests": "0",
                },
            )

    async def choose(self, caller: Principal, target: Target, tried: set[str]) -> Endpoint:
        """The ready replica with the fewest requests in flight from here (then by its own
        report); waits a while when none is ready, as while a replica restarts or starts."""
        deadline = time.monotonic() + self.wait_for_replica_s
        woke = False
        while True:
            now = time.monotonic()
            usable = [
                e
                for e in target.endpoints
                if e.url not in tried and self.down_until.get(e.url, 0.0) <= now
            ]
            if usable:
                return min(
                    usable,
                    key=lambda e: (self.inflight.get(e.job_id, 0), e.load, random.random()),
                )
            if now >= deadline:
                raise GatewayError(
                    503,
                    f"no replica of {target.name} is ready; try again shortly",
                    type_="server_error",
                    code="no_replica_ready",
                )
            if target.desired_replicas == 0 and not woke:
                woke = await run_in_threadpool(self._wake_from_zero, target.id)
            await asyncio.sleep(0.1)
            target = await self.target(caller, target.name)

    def _wake_from_zero(self, deployment_id: str) -> bool:
        with self.store.write() as s:
            dep = s.get(Deployment, deployment_id)
            if dep is not None and dep.desired_replicas == 0:
                dep.desired_replicas, dep.scaled_at = 1, utcnow()
                s.add(
                    Event(
                        object_id=dep.id,
                        tenant_id=dep.tenant_id,
                        kind="scaled-up",
                        message="0 -> 1 replicas (a request arrived)",
                    )
                )
        return True

    # -- metering --------------------------------------------------------------------------

    def _record(self, metered: Metered, usage: dict[str, Any], model: str) -> None:
        t = metered.target
        try:
            with self.store.write() as s:
                s.add(
                    TokenUsageRecord(
                        request_id=metered.request_id,
                        tenant_id=t.tenant_id,
                        deployment_id=t.id,
                        deployment=t.name,
                        model=model,
                        input_tokens=int(usage.get("prompt_tokens") or 0),
                        output_tokens=int(usage.get("completion_tokens") or 0),
                        at=utcnow(),
                    )
                )
        except IntegrityError:
            return

    async def record(self, metered: Metered, usage: Any, endpoint: Endpoint) -> None:
        """A failed write is logged, not turned into a failed answer: the tokens are spent
        either way, and the log line is what an operator reconciles the ledger from."""
        if not isinstance(usage, dict):
            return
        try:
            await run_in_threadpool(self._record, metered, usage, endpoint.model)
        except Exception:
            log.exception(
                "cannot record token usage of request %s (%s): %s",
                metered.request_id,
                metered.target.name,
                json.dumps(usage),
            )

    # -- proxying --------------------------------------------------------------------------

    async def proxy(self, request: Request, path: str) -> Response:
        caller = await self.caller(request)
        try:
            body = await request.json()
        except ValueError:
            raise GatewayError(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "the body must be a JSON object")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise GatewayError(400, "you must provide a model parameter", param="model")
        target = await self.target(caller, name)
        self.admit(target)
        stream = bool(body.get("stream"))
        wants_usage = False
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            wants_usage = bool(options.get("include_usage"))
            body = {**body, "stream_options": {**options, "include_usage": True}}
        metered = Metered(f"req-{uuid.uuid4().hex}", target)
        tried: set[str] = set()
        for attempt in range(TRIES):
            endpoint = await self.choose(caller, target, tried)
            tried.add(endpoint.url)
            self.inflight[endpoint.job_id] = self.inflight.get(endpoint.job_id, 0) + 1
            upstream: httpx.Response | None = None
            content = b""
            try:
                upstream = await self.http.send(
                    self.http.build_request(
                        "POST",
                        endpoint.url + path,
                        json=body,
                        headers={"x-request-id": metered.request_id},
                    ),
                    stream=True,
                )
                relay = stream and upstream.status_code == 200
                if not relay:
                    content = await upstream.aread()
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout):
                await self._release(endpoint, upstream)
                self._mark_down(endpoint)
                if attempt == TRIES - 1:
                    raise GatewayError(
                        503, f"replicas of {target.name} are unreachable", "server_error"
                    ) from None
                continue
            except httpx.TimeoutException:
                await self._release(endpoint, upstream)
                raise GatewayError(
                    504, f"{target.name} took too long to answer", "server_error", "timeout"
                ) from None
            except BaseException:
                await self._release(endpoint, upstream)
                raise
            headers = {"x-request-id": metered.request_id}
            if relay:
                return StreamingResponse(
                    self._relay(upstream, endpoint, metered, wants_usage),
                    media_type="text/event-stream",
                    headers={**headers, "cache-control": "no-cache"},
                )
            await self._release(endpoint, upstream)
            if upstream.status_code == 200:
                await self.record(metered, _usage_of(content), endpoint)
            return Response(
                content,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type", "application/json"),
                headers=headers,
            )
        raise GatewayError(503, f"replicas of {target.name} are unreachable", "server_error")

    def _mark_down(self, endpoint: Endpoint) -> None:
        """A replica that dropped a request is passed over for a while: it is most likely
        dead, and the controller will tell in a moment."""
        now = time.monotonic()
        self.down_until = {u: t for u, t in self.down_until.items() if t > now}
        self.down_until[endpoint.url] = now + DOWN_FOR_S

    async def _release(self, endpoint: Endpoint, upstream: httpx.Response | None) -> None:
        if upstream is not None:
            await upstream.aclose()
        self._done(endpoint)

    def _done(self, endpoint: Endpoint) -> None:
        left = self.inflight.get(endpoint.job_id, 1) - 1
        if left > 0:
            self.inflight[endpoint.job_id] = left
        else:
            self.inflight.pop(endpoint.job_id, None)

    async def _relay(
        self, upstream: httpx.Response, endpoint: Endpoint, metered: Metered, wants_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        """Passes server-sent events through one by one; the usage chunk is metered and kept
        only when the client asked for it."""
        recorded = False
        try:
            lines: list[str] = []
            async for line in upstream.aiter_lines():
                if line:
                    lines.append(line)
                    continue
                if not lines:
                    continue
                event, lines = lines, []
                usage, keep = _usage_event(event, wants_usage)
                if usage is not None and not recorded:
                    recorded = True
                    await self.record(metered, usage, endpoint)
                if keep is not None:
                    yield ("\n".join(keep) + "\n\n").encode()
            if lines:
                yield ("\n".join(lines) + "\n\n").encode()
        except httpx.TransportError as exc:
            self._mark_down(endpoint)
            error = GatewayError(502, f"the replica stopped mid-answer: {exc}", "server_error")
            yield f"data: {json.dumps(error.body())}\n\n".encode()
        finally:
            await self._release(endpoint, upstream)


def _usage_of(content: bytes) -> Any:
    try:
        return json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None


def _usage_event(event: list[str], wants_usage: bool) -> tuple[Any, list[str] | None]:
    """(the usage the event carries or None, the event's lines to pass on or None)."""
    data = "\n".join(line[5:].lstrip() for line in event if line.startswith("data:"))
    if not data or data == "[DONE]":
        return None, event
    try:
        chunk = json.loads(data)
    except ValueError:
        return None, event
    usage = chunk.get("usage") if isinstance(chunk, dict) else None
    if not usage or wants_usage:
        return usage or None, event
    if not chunk.get("choices"):
        return usage, None
    chunk.pop("usage", None)
    return usage, [f"data: {json.dumps(chunk, separators=(',', ':'))}"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.gateway = Gateway(app.state.store, app.state.auth)
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
    except GatewayError as exc:
        return exc.response()
    return JSONResponse(
        {
            "id": target.name,
            "object": "model",
            "created": target.created_s,
            "owned_by": caller.tenant,
        }
    )


@router.post("/completions")
async def completions(request: Request) -> Response:
    try:
        return await _gateway(request).proxy(request, "/v1/completions")
    except GatewayError as exc:
        return exc.response()


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    try:
        return await _gateway(request).proxy(request, "/v1/chat/completions")
    except GatewayError as exc:
        return exc.response()
