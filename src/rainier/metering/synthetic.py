"""A deterministic synthetic ledger: many tenants, one chip-usage line per tenant per hour.

Benchmarks (in memory and over a database) need the same realistic volume; the lines are made
by `charge_interval`, the production path, so keys, cuts and amounts are the real ones.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rainier.metering.charges import charge_interval
from rainier.metering.ledger import UsageLine
from rainier.metering.periods import HOUR
from rainier.metering.prices import PriceBook, default_price_book
from rainier.metering.terms import ContractTerms
from rainier.metering.usage import TaskInterval

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
HOURS_PER_YEAR = 8760
_FLAVORS = ("h200", "gb200", "trn2", "cpu")


def synthetic_contracts(
    tenants: int = 100, start: datetime = YEAR_START, hours: int = HOURS_PER_YEAR, seed: int = 0
) -> list[ContractTerms]:
    rng = random.Random(seed)
    out = []
    for n in range(tenants):
        flavor = _FLAVORS[n % len(_FLAVORS)]
        out.append(
            ContractTerms(
                contract=f"contract-{n:04d}",
                tenant=f"tenant-{n:04d}",
                start=start,
                end=start + timedelta(hours=hours),
                committed_usd=Decimal(rng.randrange(50_000, 5_000_000)),
                guaranteed_chips={flavor: rng.choice((0, 8, 16, 64))},
                discount=Decimal(rng.choice(("0", "0.1", "0.2", "0.35"))),
            )
        )
    return out


def synthetic_lines(
    contracts: list[ContractTerms],
    prices: PriceBook | None = None,
    hours: int = HOURS_PER_YEAR,
    seed: int = 0,
) -> Iterator[UsageLine]:
    """Hour by hour, one `chip_seconds` line per contract (a week-long job per tenant)."""
    prices = prices or default_price_book()
    rng = random.Random(seed + 1)
    for h in range(hours):
        for n, terms in enumerate(contracts):
            flavor = _FLAVORS[n % len(_FLAVORS)]
            start = terms.start + h * HOUR
            week = h // 168
            interval = TaskInterval(
                tenant=terms.tenant,
                contract=terms.contract,
                job_id=f"job-{n:04d}-{week:03d}",
                task_id=f"task-{n:04d}-{week:03d}-0",
                flavor=flavor,
                chips=rng.choice((1, 8, 16, 64)),
                start=start,
                end=start + HOUR,
            )
            yield from charge_interval(interval, terms, prices)
