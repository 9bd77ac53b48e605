"""The ledger line: the one immutable record of money that the store persists as it is.

Amounts are exact: every line's amount is quantized once, to a millionth of a dollar
(``AMOUNT_QUANTUM``), with banker's rounding. All sums of lines (statements, drawdown, FOCUS
totals) are then exact Decimal additions, independent of order and grouping; only an invoice
total is rounded to cents, once, at the very end (``to_cents``). A line is never edited: a
mistake is answered with a ``correction`` line whose ``corrects`` names the line it amends.

``key`` is the idempotency key: the period start's Unix second (8 hex digits), then 128 bits
of a SHA-256 over (contract, source, kind, period start, period end and, for corrections, the
revision). The same usage handed in twice yields the same key, so the store's unique constraint
on ``key`` makes every retry harmless. The time comes first so that lines written together
(usage arrives in time order) sort together: the unique index then takes them near its end, as
a time-ordered UUID would be, instead of at a random page each, which made that index the
costliest part of storing a line. Two different lines share a key only if they start in the same
second and their 128-bit digests collide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from typing import Literal

from rainier.metering.periods import epoch_micros

LineKind = Literal[
    "chip_seconds",
    "reserved_chip_seconds",
    "input_tokens",
    "output_tokens",
    "true_up",
    "correction",
]
Unit = Literal["chip_second", "token", "usd"]
PricingUnit = Literal["chip_hour", "million_tokens", "usd"]

KINDS: tuple[LineKind, ...] = (
    "chip_seconds",
    "reserved_chip_seconds",
    "input_tokens",
    "output_tokens",
    "true_up",
    "correction",
)
AMOUNT_QUANTUM = Decimal("0.000001")
_WIDE = Context(prec=60)
CENT = Decimal("0.01")
UNITS_PER_PRICING_UNIT: dict[PricingUnit, Decimal] = {
    "chip_hour": Decimal(3600),
    "million_tokens": Decimal(1_000_000),
    "usd": Decimal(1),
}


def quantize_amount(amount: Decimal) -> Decimal:
    return amount.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_EVEN)


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def price(quantity: Decimal, rate_usd: Decimal, pricing_unit: PricingUnit) -> Decimal:
    """quantity (in consumed units) x rate (per pricing unit), rounded once."""
    exact = _WIDE.divide(_WIDE.multiply(quantity, rate_usd), UNITS_PER_PRICING_UNIT[pricing_unit])
    return exact.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_EVEN)


KEY_DIGEST_HEX = 32


def idempotency_key(
    contract: str,
    source: str,
    kind: LineKind,
    period_start: datetime,
    period_end: datetime,
    revision: str = "",
) -> str:
    start_us = epoch_micros(period_start)
    parts = (contract, source, kind, str(start_us), str(epoch_micros(period_end)), revision)
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:KEY_DIGEST_HEX]
    return f"{(start_us // 1_000_000) & 0xFFFF_FFFF:08x}{digest}"


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Who, under which contract, what, when, how much and at which rate.

    ``source`` is the finest origin (``task:<job>/<task>``, ``request:<id>``,
    ``reservation:<flavor>``, ``contract``); ``resource`` is what a person looks for (the job or
    deployment id, or the contract); ``sku`` is the flavor or the model. ``quantity`` is in
    ``unit`` (chip-seconds, tokens), ``rate_usd`` is per ``pricing_unit`` (chip-hour, million
    tokens), and ``amount_usd == price(quantity, rate_usd, pricing_unit)`` always holds, so
    every cent can be recomputed from the usage that caused it.
    """

    key: str
    tenant: str
    contract: str
    kind: LineKind
    source: str
    resource: str
    sku: str
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    unit: Unit
    rate_usd: Decimal
    pricing_unit: PricingUnit
    amount_usd: Decimal
    list_rate_usd: Decimal
    list_amount_usd: Decimal
    price_book_version: int
    description: str = ""
    corrects: str | None = None
    corrects_kind: LineKind | None = None

    @property
    def charge_kind(self) -> LineKind:
        """What the line charges for: a correction counts as the kind it corrects."""
        if self.kind == "correction" and self.corrects_kind is not None:
            return self.corrects_kind
        return self.kind

    @property
    def pricing_quantity(self) -> Decimal:
        return _WIDE.divide(self.quantity, UNITS_PER_PRICING_UNIT[self.pricing_unit])


def make_line(
    *,
    tenant: str,
    contract: str,
    kind: LineKind,
    source: str,
    resource: str,
    sku: str,
    period_start: datetime,
    period_end: datetime,
    quantity: Decimal,
    unit: Unit,
    rate_usd: Decimal,
    list_rate_usd: Decimal,
    pricing_unit: PricingUnit,
    price_book_version: int,
    description: str = "",
    corrects: str | None = None,
    corrects_kind: LineKind | None = None,
    revision: str = "",
) -> UsageLine:
    """The only way lines are built: key and amounts are derived, never supplied."""
    return UsageLine(
        key=idempotency_key(contract, source, kind, period_start, period_end, revision),
        tenant=tenant,
        contract=contract,
        kind=kind,
        source=source,
        resource=resource,
        sku=sku,
        period_start=period_start,
        period_end=period_end,
        quantity=quantity,
        unit=unit,
        rate_usd=rate_usd,
        pricing_unit=pricing_unit,
        amount_usd=price(quantity, rate_usd, pricing_unit),
        list_rate_usd=list_rate_usd,
        list_amount_usd=price(quantity, list_rate_usd, pricing_unit),
        price_book_version=price_book_version,
        description=description,
        corrects=corrects,
        corrects_kind=corrects_kind,
    )


def correction(original: UsageLine, *, quantity: Decimal, reason: str, revision: int) -> UsageLine:
    """A new line adding `quantity` (negative to take back) to `original`, at its rates.

    `revision` is the number of corrections of `original` already in the ledger: the caller's
    retry of the same correction gets the same key, a later correction gets a new one.
    """
    return make_line(
        tenant=original.tenant,
        contract=original.contract,
        kind="correction",
        source=original.source,
        resource=original.resource,
        sku=original.sku,
        period_start=original.period_start,
        period_end=original.period_end,
        quantity=quantity,
        unit=original.unit,
        rate_usd=original.rate_usd,
        list_rate_usd=original.list_rate_usd,
        pricing_unit=original.pricing_unit,
        price_book_version=original.price_book_version,
        description=reason,
        corrects=original.key,
        corrects_kind=original.kind,
        revision=f"{original.key}#{revision}",
    )
