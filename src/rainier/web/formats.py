"""How the console writes numbers, money and times: Jinja filters, all pure."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        at = value
    else:
        try:
            at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """A UTC time to the second, the way the CLI prints it."""
    at = parse_time(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "—"


def day(value: Any) -> str:
    at = parse_time(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d") if at else "—"


def usd(value: Any, places: int = 2) -> str:
    """Money as the API sent it (a decimal string), grouped, never through a float."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return "—"
    quantum = Decimal(1).scaleb(-places)
    if amount != 0 and abs(amount) < quantum:
        return f"${amount:.6f}"
    return f"${amount.quantize(quantum):,}"


def number(value: Any, places: int = 2) -> str:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return "—"
    if amount == amount.to_integral_value():
        return f"{int(amount):,}"
    return f"{amount:,.{places}f}"


def metric(value: Any) -> str:
    """A training metric: small ones with significant digits, big ones grouped."""
    if not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


FILTERS = {"when": when, "day": day, "usd": usd, "number": number, "metric": metric}
