"""The operator's price book: list prices with effective dates, resolved at an instant.

A price book is immutable and versioned: the operator publishes a new version by adding prices
that take effect at some instant (usually in the future). Every ledger line records the version
it was priced with, so an invoice can always be re-derived and explained.

Token prices fall back to the model ``*``; the default book prices tokens at zero because a
tenant's own deployment already pays for its chips by the chip-second. An operator that serves
shared models sets per-model prices.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from rainier.catalog import DEFAULT_FLAVORS
from rainier.metering.periods import require_utc

ANY_MODEL = "*"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PriceNotFound(LookupError):
    """No price is in effect for this flavor or model at that instant: billing must not guess."""


@dataclass(frozen=True, slots=True)
class ChipPrice:
    flavor: str
    usd_per_chip_hour: Decimal
    effective_from: datetime

    def __post_init__(self) -> None:
        if self.usd_per_chip_hour < 0:
            raise ValueError(f"{self.flavor}: a price cannot be negative")
        object.__setattr__(self, "effective_from", require_utc(self.effective_from))


@dataclass(frozen=True, slots=True)
class TokenPrice:
    model: str
    usd_per_million_input_tokens: Decimal
    usd_per_million_output_tokens: Decimal
    effective_from: datetime

    def __post_init__(self) -> None:
        if min(self.usd_per_million_input_tokens, self.usd_per_million_output_tokens) < 0:
            raise ValueError(f"{self.model}: a price cannot be negative")
        object.__setattr__(self, "effective_from", require_utc(self.effective_from))


@dataclass(frozen=True, slots=True)
class PriceBook:
    version: int
    chip_prices: tuple[ChipPrice, ...] = ()
    token_prices: tuple[TokenPrice, ...] = ()
    _chip_index: dict[str, tuple[tuple[datetime, ...], tuple[ChipPrice, ...]]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[str, tuple[list[datetime], list[ChipPrice]]] = {}
        for p in sorted(self.chip_prices, key=lambda p: p.effective_from):
            times, prices = index.setdefault(p.flavor, ([], []))
            if times and times[-1] == p.effective_from:
                raise ValueError(f"{p.flavor}: two prices take effect at {p.effective_from}")
            times.append(p.effective_from)
            prices.append(p)
        frozen = {f: (tuple(times), tuple(prices)) for f, (times, prices) in index.items()}
        object.__setattr__(self, "_chip_index", frozen)

    def chip_price_at(self, flavor: str, at: datetime) -> ChipPrice:
        times, prices = self._chip_index.get(flavor, ((), ()))
        i = bisect_right(times, require_utc(at))
        if i == 0:
            raise PriceNotFound(f"no chip price for flavor {flavor!r} at {at.isoformat()}")
        return prices[i - 1]

    def token_price_at(self, model: str, at: datetime) -> TokenPrice:
        at = require_utc(at)
        for name in (model, ANY_MODEL):
            found = [p for p in self.token_prices if p.model == name and p.effective_from <= at]
            if found:
                return max(found, key=lambda p: p.effective_from)
        raise PriceNotFound(f"no token price for model {model!r} at {at.isoformat()}")

    def chip_price_changes(self, flavor: str) -> tuple[datetime, ...]:
        """Instants at which the flavor's price may change: lines are cut there."""
        return self._chip_index.get(flavor, ((), ()))[0]

    def with_chip_price(
        self, flavor: str, usd_per_chip_hour: Decimal, effective_from: datetime
    ) -> PriceBook:
        price = ChipPrice(flavor, Decimal(usd_per_chip_hour), effective_from)
        kept = tuple(
            p
            for p in self.chip_prices
            if (p.flavor, p.effective_from) != (flavor, price.effective_from)
        )
        return replace(self, version=self.version + 1, chip_prices=(*kept, price))

    def with_token_price(
        self,
        model: str,
        usd_per_million_input_tokens: Decimal,
        usd_per_million_output_tokens: Decimal,
        effective_from: datetime,
    ) -> PriceBook:
        price = TokenPrice(
            model,
            Decimal(usd_per_million_input_tokens),
            Decimal(usd_per_million_output_tokens),
            effective_from,
        )
        kept = tuple(
            p
            for p in self.token_prices
            if (p.model, p.effective_from) != (model, price.effective_from)
        )
        return replace(self, version=self.version + 1, token_prices=(*kept, price))


def default_price_book(effective_from: datetime = EPOCH) -> PriceBook:
    """Version 1: the shipped list prices (`rainier.spec.DEFAULT_FLAVORS`), tokens free unless
    priced. An operator's `kind: Flavor` publishes later versions."""
    return PriceBook(
        version=1,
        chip_prices=tuple(
            ChipPrice(f.name, f.list_usd_per_chip_hour, effective_from)
            for f in DEFAULT_FLAVORS.values()
        ),
        token_prices=(TokenPrice(ANY_MODEL, Decimal(0), Decimal(0), effective_from),),
    )
