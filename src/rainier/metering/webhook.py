"""Webhook delivery, the pure half: body, signature header, retry schedule.

The control plane does the sending; it signs `body(payload)` with the receiver's secret and
retries failures at the delays of `retry_delays_s`. The signature covers the timestamp too, so
a captured request cannot be replayed later than `tolerance_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

SIGNATURE_HEADER = "Rainier-Signature"


def body(payload: Mapping[str, object]) -> bytes:
    """Canonical JSON (sorted keys, no spaces) so that the signed bytes are reproducible."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: bytes, payload_body: bytes, timestamp_s: int) -> str:
    """The `Rainier-Signature` header value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
    mac = hmac.new(secret, f"{timestamp_s}.".encode() + payload_body, hashlib.sha256)
    return f"t={timestamp_s},v1={mac.hexdigest()}"


def verify(
    secret: bytes, payload_body: bytes, header: str, now_s: int, tolerance_s: int = 300
) -> bool:
    """What a receiver runs: the header is well-formed, fresh, and matches the body."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        fields[name] = value
    if "t" not in fields or "v1" not in fields or not fields["t"].isdigit():
        return False
    timestamp_s = int(fields["t"])
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = sign(secret, payload_body, timestamp_s)
    return hmac.compare_digest(expected, f"t={timestamp_s},v1={fields['v1']}")


def retry_delay_s(
    attempt: int,
    base_s: float = 10.0,
    factor: float = 2.0,
    cap_s: float = 3600.0,
    jitter: float = 0.0,
) -> float:
    """Seconds to wait before retry number `attempt` (1 = first retry): capped exponential.

    `jitter` in [0, 1) is drawn by the caller (this stays pure) and shortens the delay by up to
    half, so receivers that failed together are not retried together.
    """
    if attempt < 1:
        raise ValueError("attempt counts retries from 1")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    delay = min(cap_s, base_s * factor ** (attempt - 1))
    return delay * (1 - jitter / 2)


def retry_delays_s(
    max_attempts: int = 8, base_s: float = 10.0, factor: float = 2.0, cap_s: float = 3600.0
) -> list[float]:
    """The whole schedule without jitter; after the last delay the delivery is given up."""
    return [retry_delay_s(n, base_s, factor, cap_s) for n in range(1, max_attempts + 1)]
