"""Admission by rate limits: the caller's key's request and token buckets and the deployment's
request bucket, checked together and charged together, then settled to the tokens used.

The buckets are rows of the database (`rainier.api.ratelimit_shared`), taken with one atomic
upsert each, so `rainier server --workers N`, or several servers on one database, admit what
one process would: a limit is the tenant's, whichever worker a request reaches. Only requests
a limit applies to pay that database write."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from rainier.api.auth import Principal
from rainier.api.gateway_errors import GatewayError
from rainier.api.gateway_targets import DeploymentRoute
from rainier.api.ratelimit import Admission, KeyLimits, limit_headers
from rainier.api.ratelimit_shared import Charge, SharedBuckets
from rainier.store.db import Store


@dataclass(frozen=True)
class LimitCheck:
    """One bucket a request is charged: `kind` is OpenAI's error type when it refuses,
    `header` which `x-ratelimit-*` headers report it (the key's buckets only)."""

    charge: Charge
    kind: str
    what: str
    header: str | None = None


class RateLimits:
    """The gateway's buckets: one per deployment with a limit, one pair per key, all shared
    by every worker through the database."""

    def __init__(self, store: Store) -> None:
        self.shared_buckets = SharedBuckets(store)

    async def admit_async(
        self, caller: Principal, limits: KeyLimits, target: DeploymentRoute, tokens: int
    ) -> tuple[Admission, dict[str, str]]:
        """`admit` off the event loop, and without a database write when no limit applies."""
        if not self.charges(caller, limits, target, tokens):
            return Admission(caller.key_id, 0), {}
        return await run_in_threadpool(self.admit, caller, limits, target, tokens)

    def admit(
        self, caller: Principal, limits: KeyLimits, target: DeploymentRoute, tokens: int
    ) -> tuple[Admission, dict[str, str]]:
        """Checks the key's request and token buckets and the deployment's request bucket,
        and charges all of them only when all admit the request (a refused request costs
        nothing). Answers the charge and the `x-ratelimit-*` headers for the answer. This
        blocks on the database.

        `tokens` is an estimate (the prompt's size plus `max_tokens`), not the real count,
        which is known only when the answer is finished: charging nothing up front would let
        a burst of concurrent requests all pass on a full bucket and overshoot the limit many
        times over, while charging the worst case up front bounds it. `settle` then corrects
        the charge with the metered usage, so over time the key pays for what it used."""
        checks = self.charges(caller, limits, target, tokens)
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
    def charges(
        caller: Principal, limits: KeyLimits, target: DeploymentRoute, tokens: int
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
