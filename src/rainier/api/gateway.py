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
`x-ratelimit-*` headers. The buckets are rows of the database, so they hold across workers
and servers on one database.

This module routes and proxies; the parts it uses are modules of their own: what a model name
routes to (`gateway_targets`), the rate limits (`gateway_admission`), usage in answers and
streams (`stream_usage`), the writer of metered usage (`usage_writer`), OpenAI-shaped errors
(`gateway_errors`) and the routes (`gateway_routes`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from rainier.api.auth import Authenticator, Principal
from rainier.api.gateway_admission import RateLimits
from rainier.api.gateway_errors import GatewayError
from rainier.api.gateway_targets import DeploymentRoute, Endpoint, Targets
from rainier.api.model_cards import model_cards
from rainier.api.openai_requests import BadRequest, check_request, estimate_tokens, parse_body
from rainier.api.ratelimit import Admission, KeyLimits
from rainier.api.stream_usage import (
    EVENT_END,
    event_lines,
    is_whole_event,
    usage_event,
    usage_of,
)
from rainier.api.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from rainier.api.usage_writer import TokenUsageRow, token_usage_writer
from rainier.control.metrics import ControlMetrics
from rainier.services.deployments import wake_from_zero
from rainier.sse import EventStreamResponse
from rainier.store.db import Store
from rainier.store.tables import utcnow

log = logging.getLogger("rainier.gateway")
DOWN_FOR_S = 5.0
TRIES = 3


@dataclass(frozen=True)
class Metered:
    request_id: str
    target: DeploymentRoute
    admission: Admission
    tenant: str  # the caller's tenant name: a label of metrics


class Gateway:
    """One per server; its state (in-flight counts, rate buckets) lives in this process."""

    def __init__(self, store: Store, auth: Authenticator, metrics: ControlMetrics | None = None):
        self.store = store
        self.auth = auth
        self.metrics = metrics or ControlMetrics()
        self.wait_for_replica_s = float(os.environ.get("RAINIER_GATEWAY_WAIT_S", "60"))
        self.upstream = UpstreamPool(connect_timeout_s=2.0, read_timeout_s=600.0)
        self.inflight: dict[str, int] = {}
        self.down_until: dict[str, float] = {}
        self.limits = RateLimits(store)
        self.targets = Targets(store)
        self.usage_writer = token_usage_writer(store)

    async def close(self) -> None:
        await asyncio.to_thread(self.usage_writer.close)
        self.upstream.close()

    @property
    def pending_records(self) -> int:
        """Metered requests not yet written."""
        return self.usage_writer.pending

    def forget_targets(self) -> None:
        """Drops the cached deployments (after one is applied or deleted)."""
        self.targets.forget()

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

    async def target(self, caller: Principal, name: str, fresh: bool = False) -> DeploymentRoute:
        return await self.targets.target(caller, name, fresh)

    def models(self, tenant_id: str, tenant: str, name: str | None = None) -> list[dict[str, Any]]:
        with self.store.read() as s:
            return model_cards(s, tenant_id, tenant, name)

    # -- admission and choice --------------------------------------------------------------

    def admit(
        self, caller: Principal, limits: KeyLimits, target: DeploymentRoute, tokens: int
    ) -> tuple[Admission, dict[str, str]]:
        return self.limits.admit(caller, limits, target, tokens)

    def settle(self, admission: Admission, used_tokens: int | None) -> None:
        self.limits.settle(admission, used_tokens)

    async def choose(self, caller: Principal, target: DeploymentRoute, tried: set[str]) -> Endpoint:
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
        """Scales the deployment from zero as the autoscaler would (`rainier.services`)."""
        return wake_from_zero(self.store, deployment_id)

    # -- metering --------------------------------------------------------------------------

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
            TokenUsageRow(
                request_id=metered.request_id,
                tenant_id=t.tenant_id,
                deployment_id=t.id,
                deployment=t.name,
                model=endpoint.model,
                input_tokens=prompt,
                output_tokens=completion,
                at=utcnow(),
            )
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
            admission, limit_headers = await self.limits.admit_async(
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
        target: DeploymentRoute,
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
                self.record(metered, usage_of(content), endpoint)
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
        asked for it. An answer that ends inside an event (its replica stopped while writing
        it) ends with the gateway's error event, as a dropped connection does, not with the
        half event, which no client could parse."""
        recorded = False
        try:
            pending = b""
            async for chunk in upstream.chunks():
                pending = pending + chunk if pending else chunk
                start, ready = 0, []
                while (end := EVENT_END.search(pending, start)) is not None:
                    event, start = pending[start : end.end()], end.end()
                    if b'"usage"' not in event:
                        ready.append(event)
                        continue
                    lines = event_lines(event)
                    usage, keep = usage_event(lines, wants_usage)
                    if usage is not None and not recorded:
                        recorded = True
                        self.record(metered, usage, endpoint)
                    if keep is not None:
                        ready.append(("\n".join(keep) + "\n\n").encode())
                if ready:
                    yield ready[0] if len(ready) == 1 else b"".join(ready)
                pending = pending[start:]
            if pending.strip():
                if not is_whole_event(pending):
                    raise UpstreamError("its answer ended inside an event")
                yield pending + b"\n\n"
        except (UpstreamError, TimeoutError) as exc:
            self._mark_down(endpoint)
            error = GatewayError(502, f"the replica stopped mid-answer: {exc!r}", "server_error")
            yield f"data: {json.dumps(error.body())}\n\n".encode()
        finally:
            self._release(endpoint, upstream)
