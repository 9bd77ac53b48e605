"""Usage and contract terms in, ledger lines out.

Pricing rules (one rate for everything under a contract: list x (1 - discount)):

* Chip usage: every chip-second a task holds is billed at the contract rate, whether it falls
  inside the guarantee or is borrowed. A slice is cut at clock hours, at price-book changes and
  at the term's edges, one line per piece, so each line has one rate and lies in one hour.
* Reservation: the guarantee is a reservation of G chips for every clock hour of the term. Like
  an hourly savings plan, used chip-seconds of the hour are already on the usage lines, and the
  hour's reservation line bills the unused rest: max(0, G x 3600 - used) chip-seconds at the
  contract rate. So an hour costs max(used, reserved) x rate: reserved chips are paid whether
  used or not, usage within the guarantee costs nothing extra, usage beyond it costs the
  contract rate. This keeps usage lines a function of one slice (retries are idempotent without
  knowing other tasks) and spend is never overstated mid-hour.
* Tokens: per million input / output tokens of the model, at the contract rate.
* True-up: after the term ends, committed - spent (if positive) as one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from rainier.metering.ledger import LineKind, UsageLine, correction, make_line, price
from rainier.metering.periods import HOUR, cut, floor_hour, hour_boundaries, require_utc, seconds
from rainier.metering.prices import PriceBook
from rainier.metering.terms import ContractTerms
from rainier.metering.usage import TaskInterval, TokenUsage


def _check_owner(terms: ContractTerms, tenant: str, contract: str) -> None:
    if (tenant, contract) != (terms.tenant, terms.contract):
        raise ValueError(
            f"usage of {tenant}/{contract} handed with terms of {terms.tenant}/{terms.contract}"
        )


def _pieces(
    terms: ContractTerms, prices: PriceBook, flavor: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    points = [*hour_boundaries(start, end), *prices.chip_price_changes(flavor)]
    return cut(start, end, [*points, terms.start, terms.end])


def charge_interval(
    interval: TaskInterval, terms: ContractTerms, prices: PriceBook
) -> list[UsageLine]:
    """The `chip_seconds` lines of one slice of a task (none for a zero-chip task)."""
    _check_owner(terms, interval.tenant, interval.contract)
    if interval.chips == 0:
        return []
    lines = []
    for a, b in _pieces(terms, prices, interval.flavor, interval.start, interval.end):
        list_rate = prices.chip_price_at(interval.flavor, a).usd_per_chip_hour
        rate = terms.contract_rate(list_rate, a, b)
        lines.append(
            make_line(
                tenant=terms.tenant,
                contract=terms.contract,
                kind="chip_seconds",
                source=interval.source,
                resource=interval.job_id,
                sku=interval.flavor,
                period_start=a,
                period_end=b,
                quantity=seconds(b - a) * interval.chips,
                unit="chip_second",
                rate_usd=rate,
                list_rate_usd=list_rate,
                pricing_unit="chip_hour",
                price_book_version=prices.version,
                description=f"{interval.chips} x {interval.flavor} chips, task {interval.task_id}",
            )
        )
    return lines


def charge_tokens(usage: TokenUsage, terms: ContractTerms, prices: PriceBook) -> list[UsageLine]:
    """An `input_tokens` and an `output_tokens` line (each only when its count is non-zero)."""
    _check_owner(terms, usage.tenant, usage.contract)
    book = prices.token_price_at(usage.model, usage.at)
    counts: tuple[tuple[LineKind, int, Decimal], ...] = (
        ("input_tokens", usage.input_tokens, book.usd_per_million_input_tokens),
        ("output_tokens", usage.output_tokens, book.usd_per_million_output_tokens),
    )
    lines = []
    for kind, count, list_rate in counts:
        if count == 0:
            continue
        lines.append(
            make_line(
                tenant=terms.tenant,
                contract=terms.contract,
                kind=kind,
                source=usage.source,
                resource=usage.deployment,
                sku=usage.model,
                period_start=usage.at,
                period_end=usage.at,
                quantity=Decimal(count),
                unit="token",
                rate_usd=terms.contract_rate(list_rate, usage.at, usage.at),
                list_rate_usd=list_rate,
                pricing_unit="million_tokens",
                price_book_version=prices.version,
                description=f"{kind.replace('_', ' ')} of {usage.model}",
            )
        )
    return lines


def reservation_periods(
    terms: ContractTerms, flavor: str, prices: PriceBook, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The reservation periods of a flavor that lie wholly in [since, until) and in the term.

    A period is a clock hour of the term, cut where the flavor's price changes. The control
    plane settles each once the usage of that period is in (all tasks billed past its end).
    """
    if terms.guaranteed_chips.get(flavor, 0) <= 0:
        return []
    lo = max(require_utc(since), terms.start)
    hi = min(require_utc(until), terms.end)
    if hi <= lo:
        return []
    first = max(floor_hour(lo), terms.start)
    changes = prices.chip_price_changes(flavor)
    closed = hi == terms.end or hi == floor_hour(hi) or hi in changes
    pieces = cut(first, hi, [*hour_boundaries(first, hi), *changes])
    if not closed:
        pieces = pieces[:-1]
    return [(a, b) for a, b in pieces if lo <= a]


def used_chip_seconds(
    lines: Iterable[UsageLine], contract: str, flavor: str, start: datetime, end: datetime
) -> Decimal:
    """Chip-seconds of `flavor` used under `contract` during [start, end), corrections included.

    Usage lines never straddle a reservation period (both are cut at hours and price changes),
    so this is a plain sum of whole lines; in SQL, a SUM over lines with the period inside.
    """
    total = Decimal(0)
    for line in lines:
        if line.contract != contract or line.sku != flavor:
            continue
        if (
            line.charge_kind == "chip_seconds"
            and start <= line.period_start
            and line.period_end <= end
        ):
            total += line.quantity
    return total


def settle_reservation(
    terms: ContractTerms,
    flavor: str,
    period: tuple[datetime, datetime],
    prices: PriceBook,
    used_chip_s: Decimal,
    prior: Sequence[UsageLine] = (),
) -> UsageLine | None:
    """The line that brings the reservation charge of one period to what it should be.

    `prior` are the lines already in the ledger for this reservation period (its first
    `reserved_chip_seconds` line and any corrections of it, as returned before). First call:
    the reservation line for the unused chip-seconds. When late usage changes the unused part,
    a later call returns a `correction` of the difference, and None when nothing changed.
    """
    start, end = period
    chips = terms.guaranteed_chips.get(flavor, 0)
    list_rate = prices.chip_price_at(flavor, start).usd_per_chip_hour
    reserved = seconds(end - start) * chips
    unused = max(Decimal(0), reserved - used_chip_s)
    target = make_line(
        tenant=terms.tenant,
        contract=terms.contract,
        kind="reserved_chip_seconds",
        source=f"reservation:{flavor}",
        resource=terms.contract,
        sku=flavor,
        period_start=start,
        period_end=end,
        quantity=unused,
        unit="chip_second",
        rate_usd=terms.contract_rate(list_rate, start, end),
        list_rate_usd=list_rate,
        pricing_unit="chip_hour",
        price_book_version=prices.version,
        description=(
            f"{chips} x {flavor} chips reserved: {reserved} chip-s, {used_chip_s} used on "
            f"usage lines, {unused} unused"
        ),
    )
    original = next((p for p in prior if p.key == target.key), None)
    if original is None:
        return target
    have_quantity = sum((p.quantity for p in prior), Decimal(0))
    if have_quantity == unused:
        return None
    return correction(
        original,
        quantity=unused - have_quantity,
        reason=f"late usage: {unused} chip-s unused instead of {have_quantity}",
        revision=len(prior) - 1,
    )


def draws_down(terms: ContractTerms, line: UsageLine) -> bool:
    """Every line of the contract inside the term draws down the commitment, true-up aside."""
    return (
        line.contract == terms.contract
        and line.charge_kind != "true_up"
        and terms.covers(line.period_start, line.period_end)
    )


def committed_spend(terms: ContractTerms, lines: Iterable[UsageLine]) -> Decimal:
    return sum((line.amount_usd for line in lines if draws_down(terms, line)), Decimal(0))


def true_up(
    terms: ContractTerms, lines: Iterable[UsageLine], at: datetime, prices: PriceBook
) -> UsageLine | None:
    """After the term: the unspent commitment as a `true_up` line (None if it was all spent).

    Its key depends on the contract alone, so there is one true-up per term: compute it once
    the term's last reservation period is settled and late usage has come in.
    """
    if require_utc(at) < terms.end:
        raise ValueError(f"contract {terms.contract}: the term ends {terms.end.isoformat()}")
    spent = committed_spend(terms, lines)
    shortfall = terms.committed_usd - spent
    if shortfall <= 0:
        return None
    return make_line(
        tenant=terms.tenant,
        contract=terms.contract,
        kind="true_up",
        source="contract",
        resource=terms.contract,
        sku="",
        period_start=terms.end,
        period_end=terms.end,
        quantity=shortfall,
        unit="usd",
        rate_usd=Decimal(1),
        list_rate_usd=Decimal(1),
        pricing_unit="usd",
        price_book_version=prices.version,
        description=f"commitment {terms.committed_usd} USD, spent {spent} USD over the term",
    )


def hourly_reserved_usd(
    terms: ContractTerms, flavor: str, prices: PriceBook, at: datetime
) -> Decimal:
    """What one full hour of the flavor's guarantee costs at `at`: the floor of any hour's bill."""
    list_rate = prices.chip_price_at(flavor, at).usd_per_chip_hour
    start = floor_hour(at)
    rate = terms.contract_rate(list_rate, start, start + HOUR)
    return price(Decimal(terms.guaranteed_chips.get(flavor, 0) * 3600), rate, "chip_hour")
