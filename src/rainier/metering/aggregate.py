"""Pure sums over ledger lines: usage views, monthly statements, contract status.

Everything here is a fold over lines the caller selected (from memory or a query); the store
may push the same sums into SQL, and these functions are the reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from rainier.metering.charges import committed_spend, draws_down
from rainier.metering.ledger import LineKind, Unit, UsageLine, to_cents
from rainier.metering.periods import days, month_bounds, require_utc, seconds
from rainier.metering.terms import ContractTerms

_HORIZON_DAYS = Decimal(365 * 100)
GroupBy = Literal["flavor", "model", "job", "day", "kind"]


@dataclass(frozen=True, slots=True)
class Totals:
    quantity: Decimal
    unit: str
    amount_usd: Decimal
    lines: int


_CHIPS = ("chip_seconds", "reserved_chip_seconds")
_TOKENS = ("input_tokens", "output_tokens")


def _group_key(line: UsageLine, by: GroupBy) -> str:
    """The line's group in the view; lines the view is not about get a group in parentheses
    (`(tokens)` by flavor, `(reserved trn2)` by job, ...), so a view always sums to the total."""
    kind = line.charge_kind
    if by == "flavor":
        return line.sku if kind in _CHIPS else _aside(line)
    if by == "model":
        return line.sku if kind in _TOKENS else _aside(line)
    if by == "job":
        return line.resource if kind not in ("reserved_chip_seconds", "true_up") else _aside(line)
    if by == "day":
        return line.period_start.date().isoformat()
    return kind


def _aside(line: UsageLine) -> str:
    kind = line.charge_kind
    if kind == "reserved_chip_seconds":
        return f"(reserved {line.sku})"
    if kind == "true_up":
        return "(true-up)"
    return "(tokens)" if kind in _TOKENS else "(chips)"


def usage_by(lines: Iterable[UsageLine], by: GroupBy) -> dict[tuple[str, str], Totals]:
    """(group, unit) -> totals of every line: those outside the view (tokens when by flavor,
    reservations when by job) are grouped apart, in parentheses, and still counted.

    `job` groups usage by job or deployment (chip-seconds and tokens, each in its unit); `day` groups everything by UTC day (lines
    never straddle midnight, they are cut at every hour).
    """
    acc: dict[tuple[str, str], list[Decimal | int]] = {}
    for line in lines:
        group = _group_key(line, by)
        slot = acc.setdefault((group, line.unit), [Decimal(0), Decimal(0), 0])
        slot[0] += line.quantity
        slot[1] += line.amount_usd
        slot[2] += 1
    return {
        key: Totals(Decimal(q), key[1], Decimal(a), int(n))
        for key, (q, a, n) in sorted(acc.items())
    }


@dataclass(frozen=True, slots=True)
class StatementGroup:
    kind: LineKind
    sku: str
    unit: Unit
    quantity: Decimal
    amount_usd: Decimal
    lines: int


@dataclass(frozen=True, slots=True)
class Coverage:
    """How a flavor's guarantee met its usage in the statement's month.

    `reserved_chip_s` is the guarantee over the settled reservation periods, `unused_chip_s`
    what their reservation lines billed, `within_guarantee_chip_s` (reserved - unused) the
    usage the reservation paid for, `beyond_guarantee_chip_s` (used - within) the rest: usage
    past the guarantee, or in periods whose reservation is not settled yet.
    """

    flavor: str
    reserved_chip_s: Decimal
    used_chip_s: Decimal
    within_guarantee_chip_s: Decimal
    beyond_guarantee_chip_s: Decimal
    unused_chip_s: Decimal


@dataclass(frozen=True, slots=True)
class Statement:
    """One contract's month: lines grouped by (kind, sku), and how the commitment stands.

    `total_usd` is the exact sum of the month's line amounts; `invoice_total_usd` is that sum
    rounded to cents once. `drawn_*` count only lines inside the term (see `committed_spend`).
    """

    tenant: str
    contract: str
    period_start: datetime
    period_end: datetime
    groups: tuple[StatementGroup, ...]
    line_count: int
    total_usd: Decimal
    invoice_total_usd: Decimal
    committed_usd: Decimal
    drawn_before_usd: Decimal
    drawn_in_period_usd: Decimal
    remaining_usd: Decimal
    coverage: tuple[Coverage, ...] = ()


def monthly_statement(
    terms: ContractTerms, lines: Iterable[UsageLine], year: int, month: int
) -> Statement:
    """A line belongs to the month its period starts in (a true-up to the month the term ends)."""
    start, end = month_bounds(year, month)
    groups: dict[tuple[LineKind, str, Unit], list[Decimal | int]] = {}
    drawn_before = Decimal(0)
    month_lines: list[UsageLine] = []
    for line in lines:
        if line.contract != terms.contract:
            continue
        if line.period_start < start:
            if draws_down(terms, line):
                drawn_before += line.amount_usd
            continue
        if line.period_start >= end:
            continue
        month_lines.append(line)
        slot = groups.setdefault((line.kind, line.sku, line.unit), [Decimal(0), Decimal(0), 0])
        slot[0] += line.quantity
        slot[1] += line.amount_usd
        slot[2] += 1
    total = sum((line.amount_usd for line in month_lines), Decimal(0))
    drawn = committed_spend(terms, month_lines)
    coverage = tuple(
        _coverage(terms, flavor, chips, month_lines)
        for flavor, chips in sorted(terms.guaranteed_chips.items())
    )
    return Statement(
        tenant=terms.tenant,
        contract=terms.contract,
        period_start=start,
        period_end=end,
        groups=tuple(
            StatementGroup(kind, sku, unit, Decimal(q), Decimal(a), int(n))
            for (kind, sku, unit), (q, a, n) in sorted(groups.items())
        ),
        line_count=len(month_lines),
        total_usd=total,
        invoice_total_usd=to_cents(total),
        committed_usd=terms.committed_usd,
        drawn_before_usd=drawn_before,
        drawn_in_period_usd=drawn,
        remaining_usd=terms.committed_usd - drawn_before - drawn,
        coverage=coverage,
    )


def _coverage(
    terms: ContractTerms, flavor: str, chips: int, lines: Iterable[UsageLine]
) -> Coverage:
    reserved = used = unused = Decimal(0)
    for line in lines:
        if line.sku != flavor:
            continue
        kind = line.charge_kind
        if kind == "reserved_chip_seconds":
            unused += line.quantity
            if line.kind == kind:
                reserved += seconds(line.period_end - line.period_start) * chips
        elif kind == "chip_seconds" and terms.covers(line.period_start, line.period_end):
            used += line.quantity
    within = reserved - unused
    return Coverage(flavor, reserved, used, within, used - within, unused)


@dataclass(frozen=True, slots=True)
class ContractStatus:
    """Committed vs spent at `at`, and where the recent burn rate leads.

    `burn_usd_per_day` is the spend of the trailing window (clipped to the term) per day.
    `reached_at` is when cumulative spend first met the commitment (None if not yet);
    `projected_reach_at` extrapolates the burn rate (None if already reached or no burn);
    `projected_shortfall_usd` is what would be trued up at term end at that rate.
    """

    contract: str
    at: datetime
    committed_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    burn_usd_per_day: Decimal
    reached_at: datetime | None
    projected_reach_at: datetime | None
    projected_spend_at_end_usd: Decimal
    projected_shortfall_usd: Decimal


def cumulative_spend(
    terms: ContractTerms, lines: Iterable[UsageLine], at: datetime
) -> list[tuple[datetime, Decimal]]:
    """(period end, cumulative drawn) after each line that counts, in time order, up to `at`."""
    at = require_utc(at)
    points = sorted(
        (line.period_end, line.amount_usd)
        for line in lines
        if line.period_end <= at and draws_down(terms, line)
    )
    out: list[tuple[datetime, Decimal]] = []
    total = Decimal(0)
    for when, amount in points:
        total += amount
        out.append((when, total))
    return out


def contract_status(
    terms: ContractTerms,
    lines: Iterable[UsageLine],
    at: datetime,
    window: timedelta = timedelta(days=30),
) -> ContractStatus:
    at = require_utc(at)
    curve = cumulative_spend(terms, lines, at)
    spent = curve[-1][1] if curve else Decimal(0)
    reached_at = next((when for when, total in curve if total >= terms.committed_usd), None)
    now = min(max(at, terms.start), terms.end)
    window_start = max(terms.start, now - window)
    before_window = Decimal(0)
    for when, total in curve:
        if when <= window_start:
            before_window = total
    window_days = days(now - window_start)
    burn = (spent - before_window) / window_days if window_days > 0 else Decimal(0)
    days_left = days(terms.end - now)
    projected_end = spent + burn * days_left
    remaining = terms.committed_usd - spent
    projected_reach = None
    if reached_at is None and burn > 0 and remaining / burn < _HORIZON_DAYS:
        projected_reach = now + timedelta(days=float(remaining / burn))
    return ContractStatus(
        contract=terms.contract,
        at=at,
        committed_usd=terms.committed_usd,
        spent_usd=spent,
        remaining_usd=remaining,
        burn_usd_per_day=burn,
        reached_at=reached_at if terms.committed_usd > 0 else None,
        projected_reach_at=projected_reach,
        projected_spend_at_end_usd=projected_end,
        projected_shortfall_usd=max(Decimal(0), terms.committed_usd - projected_end),
    )
