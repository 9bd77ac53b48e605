"""Admission by rate limits: the caller's key's request and token buckets and the deployment's
request bucket, checked together and charged together, then settled to the tokens used.

The buckets live in this process: the limit is per process, so `rainier server --workers N`
admits up to N times each limit (see `rainier.api.ratelimit`)."""

from __future__ import annotations

import math
import time

from rainier.api.auth import Principal
from rainier.api.gateway_errors import GatewayError
from rainier.api.gateway_targets import DeploymentRoute
from rainier.api.ratelimit import Admission, KeyBuckets, KeyLimits, TokenBucket, limit_headers


class RateLimits:
    """The gateway's token buckets: one per deployment with a limit, one pair per key."""

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        self.key_buckets: dict[str, KeyBuckets] = {}

    def admit(
        self, caller: Principal, limits: KeyLimits, target: DeploymentRoute, tokens: int
    ) -> tuple[Admission, dict[str, str]]:
        """Checks the key's request and token buckets and the deployment's request bucket,
        and charges all of them only when all admit the request (a refused request costs
        nothing). Answers the charge and the `x-ratelimit-*` headers for the answer.

        `tokens` is an estimate (the prompt's size plus `max_tokens`), not the real count,
        which is known only when the answer is finished: charging nothing up front would let
        a burst of concurrent requests all pass on a full bucket and overshoot the limit many
        times over, while charging the worst case up front bounds it. `settle` then corrects
        the charge with the metered usage, so over time the key pays for what it used."""
        now = time.monotonic()
        keyed = self._key_buckets(caller.key_id, limits)
        requests = keyed.requests if keyed else None
        bucket_tokens = keyed.tokens if keyed else None
        deployment = self._deployment_bucket(target)
        headers = limit_headers(requests, bucket_tokens)
        if bucket_tokens is not None and tokens > bucket_tokens.per_minute:
            raise GatewayError(
                429,
                f"Request too large: it may use up to {tokens} tokens (prompt + max_tokens) "
                f"but this key's limit is {bucket_tokens.per_minute} tokens per minute. "
                "Lower max_tokens or shorten the prompt.",
                type_="tokens",
                code="rate_limit_exceeded",
                headers={**headers, "x-should-retry": "false"},
            )
        checks: list[tuple[TokenBucket, float, str, str]] = []
        if requests is not None:
            checks.append((requests, 1.0, "requests", "requests per minute on this key"))
        if bucket_tokens is not None:
            checks.append((bucket_tokens, float(tokens), "tokens", "tokens per minute on this key"))
        if deployment is not None:
            checks.append((deployment, 1.0, "requests", f"requests per minute on {target.name}"))
        refused = [
            (bucket.wait(amount, now), kind, f"{bucket.per_minute} {what}")
            for bucket, amount, kind, what in checks
        ]
        refused = [r for r in refused if r[0] > 0]
        if refused:
            wait = max(r[0] for r in refused)
            _, kind, what = refused[0]
            raise GatewayError(
                429,
                f"Rate limit reached: {what}. Try again in {wait:.1f}s.",
                type_=kind,
                code="rate_limit_exceeded",
                headers={**headers, "retry-after": str(max(1, math.ceil(wait)))},
            )
        for bucket, amount, _, _ in checks:
            bucket.take(amount, now)
        charged = tokens if bucket_tokens is not None else 0
        return Admission(caller.key_id, charged), limit_headers(requests, bucket_tokens)

    def _key_buckets(self, key_id: str | None, limits: KeyLimits) -> KeyBuckets | None:
        if key_id is None or (limits.rpm is None and limits.tpm is None):
            if key_id is not None:
                self.key_buckets.pop(key_id, None)
            return None
        found = self.key_buckets.get(key_id)
        if found is None or found.limits != limits:
            found = self.key_buckets[key_id] = KeyBuckets.of(limits)
        return found

    def _deployment_bucket(self, target: DeploymentRoute) -> TokenBucket | None:
        rpm = target.rate_limit_rpm
        if rpm is None:
            self.buckets.pop(target.id, None)
            return None
        bucket = self.buckets.get(target.id)
        if bucket is None or bucket.per_minute != rpm:
            bucket = self.buckets[target.id] = TokenBucket(rpm)
        return bucket

    def settle(self, admission: Admission, used_tokens: int | None) -> None:
        """Corrects a request's token charge: to what it used, or to nothing (None) when no
        answer came. Once per request; later calls change nothing."""
        if admission.settled or admission.key_id is None or admission.tokens == 0:
            admission.settled = True
            return
        admission.settled = True
        keyed = self.key_buckets.get(admission.key_id)
        if keyed is not None and keyed.tokens is not None:
            keyed.tokens.adjust(admission.tokens - (used_tokens or 0))
