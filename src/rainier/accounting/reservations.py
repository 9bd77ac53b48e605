"""Reservation periods and the true-up: settled once every chip-second before them is on the
ledger, each contract's progress kept in a `metering_cursors` row so a restart goes on from
where the last run stopped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from rainier.accounting.contract_lookup import contract_terms
from rainier.accounting.ledger_rows import (
    LINES,
    insert_lines,
    iter_lines,
    of_contract,
    select_lines,
)
from rainier.metering import (
    ContractTerms,
    PriceBook,
    UsageLine,
    reservation_periods,
    settle_reservation,
    true_up,
)
from rainier.store.db import Store
from rainier.store.lifecycle import LIVE_TASK_STATES
from rainier.store.tables import Contract, MeteringCursor, Task

PricesOf = Callable[[Session], PriceBook]


def billed_horizon(s: Session, now: datetime, settle_delay_s: float) -> datetime:
    """Every chip-second before this instant is on the ledger already."""
    horizon = now - timedelta(seconds=settle_delay_s)
    live = s.scalar(
        select(func.min(func.coalesce(Task.billed_until, Task.started_at))).where(
            Task.state.in_(LIVE_TASK_STATES), Task.started_at.is_not(None)
        )
    )
    if live is not None:
        horizon = min(horizon, live.replace(tzinfo=UTC) if live.tzinfo is None else live)
    return horizon


def settle_contract(
    store: Store,
    prices_of: PricesOf,
    row: Contract,
    cursors: dict[str, MeteringCursor],
    horizon: datetime,
    now: datetime,
    max_periods: int,
) -> bool:
    """Settles the contract's reservation periods up to `horizon`, and its true-up once they
    are all settled and the term is over. Returns whether its ledger may have moved."""
    terms = contract_terms(row)
    done = True
    moved = False
    for flavor in sorted(terms.guaranteed_chips):
        name = f"reservation:{terms.contract}:{flavor}"
        cursor = cursors.get(name)
        since = cursor.at if cursor is not None and cursor.at is not None else terms.start
        if since < terms.end:
            moved |= _settle_flavor(
                store, prices_of, terms, flavor, name, since, horizon, max_periods
            )
            done = False
    true_up_done = f"true_up:{terms.contract}" in cursors
    if done and not true_up_done and terms.end <= horizon:
        _true_up(store, prices_of, terms, now)
    return moved


def _settle_flavor(
    store: Store,
    prices_of: PricesOf,
    terms: ContractTerms,
    flavor: str,
    cursor_name: str,
    since: datetime,
    horizon: datetime,
    max_periods: int,
) -> bool:
    with store.write() as s:
        prices = prices_of(s)
        periods = reservation_periods(terms, flavor, prices, since, horizon)[:max_periods]
        if not periods:
            return False
        c = LINES.c
        lines: list[UsageLine] = []
        for a, b in periods:
            used = s.scalar(
                select(func.sum(c.quantity)).where(
                    of_contract(terms),
                    c.sku == flavor,
                    c.period_start >= a,
                    c.period_start < b,
                    c.period_end <= b,
                    or_(
                        c.kind == "chip_seconds",
                        and_(c.kind == "correction", c.corrects_kind == "chip_seconds"),
                    ),
                )
            )
            prior = list(
                iter_lines(
                    s,
                    select_lines(
                        contract=terms.contract, tenant=terms.tenant, since=a, until=b
                    ).where(c.source == f"reservation:{flavor}", c.period_end == b),
                )
            )
            line = settle_reservation(terms, flavor, (a, b), prices, Decimal(used or 0), prior)
            if line is not None:
                lines.append(line)
        insert_lines(s, lines)
        cursor = s.get(MeteringCursor, cursor_name)
        if cursor is None:
            cursor = MeteringCursor(name=cursor_name)
            s.add(cursor)
        cursor.at = periods[-1][1]
    return True


def _true_up(store: Store, prices_of: PricesOf, terms: ContractTerms, now: datetime) -> None:
    with store.write() as s:
        prices = prices_of(s)
        lines = iter_lines(s, select_lines(contract=terms.contract, tenant=terms.tenant))
        line = true_up(terms, lines, max(now, terms.end), prices)
        insert_lines(s, [line] if line is not None else [])
        s.add(MeteringCursor(name=f"true_up:{terms.contract}", at=now))
