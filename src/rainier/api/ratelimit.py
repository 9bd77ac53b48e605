"""Rate limits of the gateway: token buckets per key and per deployment, and OpenAI's
`x-ratelimit-*` headers that report them (see `rainier.api.gateway` for how they apply)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass
class TokenBucket:
    """Holds up to `per_minute` units and refills at `per_minute` a minute: a minute's worth at
    once after a quiet minute, then the steady rate. The level may drop below zero when a
    correction charges more than was taken; admissions then wait until that is paid back."""

    per_minute: int
    level: float | None = None
    at: float = 0.0

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    def _refill(self, now: float) -> float:
        if self.level is None:
            self.level = float(self.per_minute)
        else:
            gained = max(0.0, now - self.at) * self.rate
            self.level = min(float(self.per_minute), self.level + gained)
        self.at = max(self.at, now)
        return self.level

    def wait(self, amount: float, now: float) -> float:
        """0 when `amount` may be taken now, else the seconds until it may."""
        level = self._refill(now)
        return 0.0 if level >= amount else (amount - level) / self.rate

    def take(self, amount: float = 1.0, now: float | None = None) -> float:
        """Takes `amount` and answers 0, or takes nothing and answers the seconds to wait."""
        wait = self.wait(amount, time.monotonic() if now is None else now)
        if wait == 0.0:
            assert self.level is not None
            self.level -= amount
        return wait

    def adjust(self, amount: float) -> None:
        """Gives back (amount > 0) or charges (amount < 0) after the fact."""
        if self.level is not None:
            self.level = min(float(self.per_minute), self.level + amount)

    def remaining(self) -> int:
        return max(0, math.floor(self.level if self.level is not None else self.per_minute))

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        level = self.level if self.level is not None else float(self.per_minute)
        return max(0.0, (self.per_minute - level) / self.rate)


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None


@dataclass
class KeyBuckets:
    limits: KeyLimits
    requests: TokenBucket | None
    tokens: TokenBucket | None

    @classmethod
    def of(cls, limits: KeyLimits) -> KeyBuckets:
        return cls(
            limits,
            TokenBucket(limits.rpm) if limits.rpm else None,
            TokenBucket(limits.tpm) if limits.tpm else None,
        )


@dataclass
class Admission:
    """What a request was charged on admission, so the charge can be corrected once the
    answer's real size is known (or refunded when nothing was answered)."""

    key_id: str | None
    tokens: int
    settled: bool = False
    # the shared bucket the tokens were taken from, and its size (see `ratelimit_shared`)
    bucket: str | None = None
    per_minute: int = 0


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `6s`, `1m30s`."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class LimitView(Protocol):
    """What the headers report of a bucket: a `TokenBucket` or a shared bucket's state."""

    @property
    def per_minute(self) -> int: ...

    def remaining(self) -> int: ...

    def reset_s(self) -> float: ...


def limit_headers(requests: LimitView | None, tokens: LimitView | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, bucket in (("requests", requests), ("tokens", tokens)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.per_minute)
            headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
            headers[f"x-ratelimit-reset-{kind}"] = duration(bucket.reset_s())
    return headers
