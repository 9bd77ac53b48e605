"""Instants and periods in UTC: the only calendar arithmetic metering does.

Every line is cut at clock-hour boundaries so that a line never straddles an hour, a day or a
month: hourly reservations, daily usage and monthly statements are then plain sums of whole
lines, never prorations.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

HOUR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_SECOND = Decimal(1_000_000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def require_utc(at: datetime, what: str = "time") -> datetime:
    """Naive datetimes are refused rather than guessed: a wrong zone is a wrong bill."""
    if at.tzinfo is UTC:
        return at
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {at.isoformat()}")
    return at.astimezone(UTC)


def seconds(delta: timedelta) -> Decimal:
    """Exact seconds of a timedelta (datetimes resolve to the microsecond, so this terminates)."""
    return Decimal(delta // _MICROSECOND) / _MICROS_PER_SECOND


def stamp(at: datetime) -> str:
    """One spelling per instant, so keys built from times are stable across zones and callers."""
    return require_utc(at).isoformat(timespec="microseconds")


def epoch_micros(at: datetime) -> int:
    """Microseconds since the Unix epoch: an instant's exact, zone-free identity, cheap to hash."""
    return (require_utc(at) - _EPOCH) // _MICROSECOND


def floor_hour(at: datetime) -> datetime:
    return require_utc(at).replace(minute=0, second=0, microsecond=0)


def hour_boundaries(start: datetime, end: datetime) -> list[datetime]:
    """Clock hours strictly inside (start, end)."""
    out = []
    t = floor_hour(start) + HOUR
    while t < end:
        out.append(t)
        t += HOUR
    return out


def cut(
    start: datetime, end: datetime, points: Iterable[datetime]
) -> list[tuple[datetime, datetime]]:
    """[start, end) split at every point strictly inside it; empty when end <= start."""
    if end <= start:
        return []
    inner = sorted({p for p in points if start < p < end})
    if not inner:
        return [(start, end)]
    edges = [start, *inner, end]
    return list(pairwise(edges))


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, got {month}")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def days(delta: timedelta) -> Decimal:
    return seconds(delta) / Decimal(86400)
