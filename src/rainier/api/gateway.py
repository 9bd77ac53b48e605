"""The OpenAI-compatible gateway: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

A tenant's API key authenticates; `model` names one of the tenant's deployments (any other name,
another tenant's included, is "not found"). The request goes to the least-loaded ready replica
and the answer streams back as it comes. Every answered request is metered once: the replica's
`usage` is written to `token_usage` under the request id the gateway gave it, just after the
answer (off its path, several requests to a transaction under load). For streams the
gateway always asks the replica for the final usage chunk and drops it again when the client
did not ask for it. Errors follow OpenAI's shape, so OpenAI clients report them as usual.

When no replica is ready (starting, restarting, or the deployment sits at zero replicas, which
the request then wakes) the request waits up to `RAINIER_GATEWAY_WAIT_S` seconds. A request a
replica drops before answering goes to another replica.

Rate limits: a deployment may set requests per minute (`rate_limit_rpm`), and each API key may
set requests and tokens per minute (`rate_limit_rpm`, `rate_limit_tpm` on the key). They are
token buckets, all checked before any is charged, answered with 429, `Retry-After` and OpenAI's
`x-ratelimit-*` headers. The buckets are rows of the database (`rainier.api.ratelimit_shared`),
taken with one atomic upsert each, so `rainier server --workers N`, or several servers on one
database, admit what one process would: a limit is the tenant's, whichever worker a request
reaches. Only requests a limit applies to pay that database write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rainier.api.auth import Authenticator, Principal
from rainier.api.openai_requests import BadRequest, check_request, estimate_tokens, parse_body
from rainier.api.ratelimit import Admission, KeyLimits, limit_headers
from rainier.api.ratelimit_shared import Charge, SharedBuckets
from rainier.api.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from rainier.api.usage_writer import UsageWriter
from rainier.control.deployments import MODEL_ENV
from rainier.control.metrics import ControlMetrics
from rainier.spec import DeploymentSpec
from rainier.sse import EventStreamResponse
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
# How long a deployment's settings and ready replicas are reused for later requests. Changes
# made through this process's API apply at once; the controller's (a replica turning ready or
# going away) within this time, and a replica gone meanwhile costs a retry, not an error.
TARGET_CACHE_S = 1.0


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
        self.deployment = ""  # the deployment asked for, once known: a label of metrics
        self.tenant = ""  # the caller's tenant, once known: the deployment name's namespace

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


@dataclass(frozen=True)
class LimitCheck:
    """One bucket a request is charged: `kind` is OpenAI's error type when it refuses,
    `header` which `x-ratelimit-*` headers report it (the key's buckets only)."""

    charge: Charge
    kind: str
    what: str
    header: str | None = None


@dataclass(frozen=True)
class Metered:
    request_id: str
    target: Target
    admission: Admission
    tenant: str  # the caller's tenant name: a label of metrics


class Gateway:
    """One per server process; its in-flight counts live in this process, its rate buckets in
    the database (shared by every process)."""

    def __init__(self, store: Store, auth: Authenticator, metrics: ControlMetrics | None = None):
        self.store = store
        self.auth = auth
        self.metrics = metrics or ControlMetrics()
        self.wait_for_replica_s = float(os.environ.get("RAINIER_GATEWAY_WAIT_S", "60"))
        self.upstream = UpstreamPool(connect_timeout_s=2.0, read_timeout_s=600.0)
        self.inflight: dict[str, int] = {}
        self.down_until: dict[str, float] = {}
        self.shared_buckets = SharedBuckets(store)
        self._targets: dict[tuple[str, str], tuple[float, Target]] = {}
        self.usage_writer = UsageWriter(self._write)

    async def close(self) -> None:
        await asyncio.to_thread(self.usage_writer.close)
        self.upstream.close()

    @property
    def pending_records(self) -> int:
        """Metered requests not yet written."""
        return self.usage_writer.pending

    def forget_targets(self) -> None:
        """Drops the cached deployments (after one is applied or deleted)."""
        self._targets.clear()

    # -- who and what ----------------------------------------------------------------------

    async def identify(self, request: Request) -> tuple[Principal, KeyLimits]:
        """The caller and its key's limits; a key the authenticator saw a moment ago is
        answered from its cache, without a database read or a hop to the thread pool."""
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise GatewayError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        hit, found = self.auth.cached(secret)
        if not hit:
            found = await run_in_threadpool(self.auth.resolve, secret)
        if found is None:
            raise GatewayError(401, "invalid or revoked API key", code="invalid_api_key")
        if found.tenant_id is None:
            raise GatewayError(
                401, "this key belongs to no tenant: use a tenant's key", code="invalid_api_key"
            )
        return found, KeyLimits(found.rate_limit_rpm, found.rate_limit_tpm)

    async def caller(self, request: Request) -> Principal:
        return (await self.identify(request))[0]

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

    async def target(self, caller: Principal, name: str, fresh: bool = False) -> Target:
        key = (caller.tenant_id or "", name)
        now = time.monotonic()
        hit = None if fresh else self._targets.get(key)
        if hit is not None and now - hit[0] < TARGET_CACHE_S:
            return hit[1]
        found = await run_in_threadpool(self._target, *key)
        if found is not None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[key] = (now, found)
        else:
            self._targets.pop(key, None)
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

    def admit(
        self, caller: Principal, limits: KeyLimits, target: Target, tokens: int
    ) -> tuple[Admission, dict[str, str]]:
        """Checks the key's request and token buckets and the deployment's request bucket,
        and charges all of them only when all admit the request (a refused request costs
        nothing). Answers the charge and the `x-ratelimit-*` headers for the answer. The
        buckets are the database's (`ratelimit_shared`), so the limits hold across every
        worker and server; this blocks on the database and runs off the event loop.

        `tokens` is an estimate (the prompt's size plus `max_tokens`), not the real count,
        which is known only when the answer is finished: charging nothing up front would let
        a burst of concurrent requests all pass on a full bucket and overshoot the limit many
        times over, while charging the worst case up front bounds it. `settle` then corrects
        the charge with the metered usage, so over time the key pays for what it used."""
        checks = self._charges(caller, limits, target, tokens)
        if not checks:
            return Admission(caller.key_id, 0), {}
        if limits.tpm is not None and tokens > limits.tpm:
            raise GatewayError(
                429,
                f"Request too large: it may use up to {tokens} tokens (prompt + max_tokens) "
                f"but this key's limit is {limits.tpm} tokens per minute. "
                "Lower max_tokens or shorten the prompt.",
                type_="tokens",
                code="rate_limit_exceeded",
                headers={"x-ratelimit-limit-tokens": str(limits.tpm), "x-should-retry": "false"},
            )
        states = self.shared_buckets.take([c.charge for c in checks], time.time())
        said = {c.header: st for c, st in zip(checks, states, strict=True) if c.header}
        headers = limit_headers(said.get("requests"), said.get("tokens"))
        refused = [
            (st.wait_s(), c) for c, st in zip(checks, states, strict=True) if not st.admitted
        ]
        if refused:
            wait = max(r[0] for r in refused)
            first = refused[0][1]
            raise GatewayError(
                429,
                f"Rate limit reached: {first.what}. Try again in {wait:.1f}s.",
                type_=first.kind,
                code="rate_limit_exceeded",
                headers={**headers, "retry-after": str(max(1, math.ceil(wait)))},
            )
        taken = said.get("tokens")
        if taken is None:
            return Admission(caller.key_id, 0), headers
        charged = Admission(
            caller.key_id, tokens, bucket=taken.charge.key, per_minute=taken.per_minute
        )
        return charged, headers

    @staticmethod
    def _charges(
        caller: Principal, limits: KeyLimits, target: Target, tokens: int
    ) -> list[LimitCheck]:
        """The buckets a request is charged, in the order a refusal names them."""
        checks: list[LimitCheck] = []
        key = caller.key_id
        if key is not None and limits.rpm:
            checks.append(
                LimitCheck(
                    Charge(f"key:{key}:rpm:{limits.rpm}", limits.rpm, 1.0),
                    "requests",
                    f"{limits.rpm} requests per minute on this key",
                    "requests",
                )
            )
        if key is not None and limits.tpm:
            checks.append(
                LimitCheck(
                    Charge(f"key:{key}:tpm:{limits.tpm}", limits.tpm, float(tokens)),
                    "tokens",
                    f"{limits.tpm} tokens per minute on this key",
                    "tokens",
                )
            )
        rpm = target.rate_limit_rpm
        if rpm:
            checks.append(
                LimitCheck(
                    Charge(f"deployment:{target.id}:rpm:{rpm}", rpm, 1.0),
                    "requests",
                    f"{rpm} requests per minute on {target.name}",
                )
            )
        return checks

    def settle(self, admission: Admission, used_tokens: int | None) -> None:
        """Corrects a request's token charge: to what it used, or to nothing (None) when no
        answer came. Once per request; later calls change nothing. The database write runs
        off the event loop and off the answer's path."""
        if admission.settled or admission.bucket is None or admission.tokens == 0:
            admission.settled = True
            return
        admission.settled = True
        back = admission.tokens - (used_tokens or 0)
        if back == 0:
            return
        self.shared_buckets.give_back(Charge(admission.bucket, admission.per_minute, float(back)))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.shared_buckets.settle_owed()
            return
        loop.run_in_executor(None, self.shared_buckets.settle_owed)

    async def _admit(
        self, caller: Principal, limits: KeyLimits, target: Target, tokens: int
    ) -> tuple[Admission, dict[str, str]]:
        if not self._charges(caller, limits, target, tokens):
            return Admission(caller.key_id, 0), {}
        return await run_in_threadpool(self.admit, caller, limits, target, tokens)

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
            target = await self.target(caller, target.name, fresh=True)

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

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            with self.store.write() as s:
                s.execute(insert(TokenUsageRecord), rows)
            return
        except IntegrityError:
            if len(rows) == 1:
                return
        for row in rows:  # one request id already recorded: write the others one by one
            self._write([row])

    def record(self, metered: Metered, usage: Any, endpoint: Endpoint) -> None:
        """Meters an answered request. The write happens after the answer, off its path (a
        database commit per request would be most of the gateway's latency); a failed write
        is logged, not turned into a failed answer: the tokens are spent either way, and the
        log line is what an operator reconciles the ledger from."""
        if not isinstance(usage, dict):
            return
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        self.settle(metered.admission, prompt + completion)
        t = metered.target
        self.metrics.metered(metered.tenant, t.name, prompt, completion)
        self.usage_writer.put(
            {
                "request_id": metered.request_id,
                "tenant_id": t.tenant_id,
                "deployment_id": t.id,
                "deployment": t.name,
                "model": endpoint.model,
                "input_tokens": prompt,
                "output_tokens": completion,
                "at": utcnow(),
            }
        )

    # -- proxying --------------------------------------------------------------------------

    async def proxy(self, request: Request, path: str) -> Response:
        """Answers one /v1 request, counted per deployment (requests, latency, errors)."""
        started = time.perf_counter()
        try:
            response, tenant, deployment = await self._proxy(request, path)
        except GatewayError as exc:
            self.metrics.answered(exc.tenant, exc.deployment, exc.status, started, exc.type)
            raise
        error = "upstream_error" if response.status_code >= 400 else ""
        self.metrics.answered(tenant, deployment, response.status_code, started, error)
        return response

    async def _proxy(self, request: Request, path: str) -> tuple[Response, str, str]:
        caller, limits = await self.identify(request)
        try:
            response, deployment = await self._answer(request, path, caller, limits)
        except GatewayError as exc:
            exc.tenant = caller.tenant or ""
            raise
        return response, caller.tenant or "", deployment

    async def _answer(
        self, request: Request, path: str, caller: Principal, limits: KeyLimits
    ) -> tuple[Response, str]:
        raw = await request.body()
        try:
            body = parse_body(raw)
            name = check_request(body, path)
        except BadRequest as exc:
            raise GatewayError(400, exc.message, param=exc.param) from None
        try:
            target = await self.target(caller, name)
            admission, limit_headers = await self._admit(
                caller, limits, target, estimate_tokens(body, path)
            )
        except GatewayError as exc:
            exc.deployment = name
            raise
        try:
            response = await self._forward(
                body, raw, path, caller, target, admission, limit_headers
            )
        except GatewayError as exc:
            self.settle(admission, None)
            exc.deployment = target.name
            raise
        except BaseException:
            self.settle(admission, None)
            raise
        return response, target.name

    async def _forward(
        self,
        body: dict[str, Any],
        raw: bytes,
        path: str,
        caller: Principal,
        target: Target,
        admission: Admission,
        limit_headers: dict[str, str],
    ) -> Response:
        """`raw` is the client's body, sent on as it is unless the stream's usage chunk has to
        be asked for."""
        stream = bool(body.get("stream"))
        wants_usage = False
        payload = raw
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            wants_usage = bool(options.get("include_usage"))
            if options.get("include_usage") is not True:
                body = {**body, "stream_options": {**options, "include_usage": True}}
                payload = json.dumps(body, separators=(",", ":")).encode()
        metered = Metered(f"req-{uuid.uuid4().hex}", target, admission, caller.tenant or "")
        tried: set[str] = set()
        for attempt in range(TRIES):
            endpoint = await self.choose(caller, target, tried)
            tried.add(endpoint.url)
            self.inflight[endpoint.job_id] = self.inflight.get(endpoint.job_id, 0) + 1
            upstream: UpstreamResponse | None = None
            content = b""
            try:
                upstream = await self.upstream.request(
                    "POST",
                    endpoint.url,
                    path,
                    payload,
                    {"content-type": "application/json", "x-request-id": metered.request_id},
                )
                relay = stream and upstream.status == 200
                if not relay:
                    content = await upstream.read()
            except TimeoutError:
                self._release(endpoint, upstream)
                raise GatewayError(
                    504, f"{target.name} took too long to answer", "server_error", "timeout"
                ) from None
            except UpstreamError:
                self._release(endpoint, upstream)
                self._mark_down(endpoint)
                if attempt == TRIES - 1:
                    raise GatewayError(
                        503, f"replicas of {target.name} are unreachable", "server_error"
                    ) from None
                continue
            except BaseException:
                self._release(endpoint, upstream)
                raise
            headers = {"x-request-id": metered.request_id, **limit_headers}
            if relay:
                return EventStreamResponse(
                    self._relay(upstream, endpoint, metered, wants_usage),
                    headers={**headers, "cache-control": "no-cache"},
                )
            self._release(endpoint, upstream)
            if upstream.status == 200:
                self.record(metered, _usage_of(content), endpoint)
            else:
                self.settle(admission, None)
            return Response(
                content,
                status_code=upstream.status,
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

    def _release(self, endpoint: Endpoint, upstream: UpstreamResponse | None) -> None:
        if upstream is not None:
            upstream.release()
        self._done(endpoint)

    def _done(self, endpoint: Endpoint) -> None:
        left = self.inflight.get(endpoint.job_id, 1) - 1
        if left > 0:
            self.inflight[endpoint.job_id] = left
        else:
            self.inflight.pop(endpoint.job_id, None)

    async def _relay(
        self,
        upstream: UpstreamResponse,
        endpoint: Endpoint,
        metered: Metered,
        wants_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        """Passes server-sent events through as the bytes they came in, as soon as each is
        complete; the events that arrived together leave together, in one write. Only an
        event that carries usage is parsed: it is metered, and kept only when the client
        asked for it."""
        recorded = False
        try:
            pending = b""
            async for chunk in upstream.chunks():
                pending = pending + chunk if pending else chunk
                start, ready = 0, []
                while (end := _EVENT_END.search(pending, start)) is not None:
                    event, start = pending[start : end.end()], end.end()
                    if b'"usage"' not in event:
                        ready.append(event)
                        continue
                    lines = event.decode().rstrip("\r\n").splitlines()
                    usage, keep = _usage_event(lines, wants_usage)
                    if usage is not None and not recorded:
                        recorded = True
                        self.record(metered, usage, endpoint)
                    if keep is not None:
                        ready.append(("\n".join(keep) + "\n\n").encode())
                if ready:
                    yield ready[0] if len(ready) == 1 else b"".join(ready)
                pending = pending[start:]
            if pending.strip():
                yield pending + b"\n\n"
        except (UpstreamError, TimeoutError) as exc:
            self._mark_down(endpoint)
            error = GatewayError(502, f"the replica stopped mid-answer: {exc!r}", "server_error")
            yield f"data: {json.dumps(error.body())}\n\n".encode()
        finally:
            self._release(endpoint, upstream)


# The blank line that ends a server-sent event, in any of the line endings the format allows.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _usage_of(content: bytes) -> Any:
    try:
        return json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None


def _usage_event(event: list[str], wants_usage: bool) -> tuple[Any, list[str] | None]:
    """(the usage the event carries or None, the event's lines to pass on or None)."""
    data = "\n".join(line[5:].lstrip() for line in event if line.startswith("data:"))
    if not data or data == "[DONE]" or '"usage"' not in data:
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
