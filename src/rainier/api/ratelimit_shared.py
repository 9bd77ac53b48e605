"""Rate limits every API process shares: one row per limit in the database, updated with GCRA.

A bucket that holds `per_minute` units and refills at `per_minute` a minute is kept as one
number, the instant it would be full again (`full_at`): its level at `now` is
`per_minute - (full_at - now) / interval`, where `interval` is the seconds one unit takes to
come back. Taking `amount` units is admitted when the bucket still holds them, that is when
`max(full_at, now) + amount * interval - now` is at most a minute, and then moves `full_at` on
by `amount * interval`. The test and the move are one `INSERT ... ON CONFLICT DO UPDATE` per
bucket, atomic on SQLite (its write lock) and PostgreSQL (the row's lock), so any number of
workers or servers on one database admit what one would: the limit is the tenant's, not each
process's.

A request is checked against up to three buckets (a key's requests and tokens, the
deployment's requests); it is charged all of them or none: the buckets are taken in one
transaction, and those that admitted are given back when another refused.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import cast

from sqlalchemy import ColumnElement, Float, Table, case, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rainier.store.db import Store
from rainier.store.tables import RateBucket

WINDOW_S = 60.0
# Float sums of many small intervals drift by a few ulps: a request that fits exactly must not
# be refused for that.
SLACK_S = 1e-6


@dataclass(frozen=True)
class Charge:
    """`amount` units of the bucket named `key`, which holds `per_minute` units."""

    key: str
    per_minute: int
    amount: float

    @property
    def interval_s(self) -> float:
        return WINDOW_S / self.per_minute


@dataclass(frozen=True)
class BucketState:
    """What one bucket said about one request: whether it had room (the request is charged
    only when every bucket had), and its level after, for the `x-ratelimit-*` headers."""

    charge: Charge
    admitted: bool
    full_at: float
    now: float

    @property
    def per_minute(self) -> int:
        return self.charge.per_minute

    @property
    def backlog_s(self) -> float:
        return max(0.0, self.full_at - self.now)

    def remaining(self) -> int:
        return max(0, math.floor(self.charge.per_minute - self.backlog_s / self.charge.interval_s))

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return self.backlog_s

    def wait_s(self) -> float:
        """0 when admitted, else the seconds until `amount` would fit."""
        if self.admitted:
            return 0.0
        return max(0.0, self.backlog_s + self.charge.amount * self.charge.interval_s - WINDOW_S)


class SharedBuckets:
    """The database's rate buckets, as the gateway of any API process takes from them.

    Corrections after the fact (`give_back`) are owed until the next transaction on the
    buckets, or `settle_owed`, applies them: a request answered by this process is corrected
    before this process admits the next one, without a write on the answer's path."""

    def __init__(self, store: Store):
        self.store = store
        self._owed: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, charges: list[Charge], now: float) -> list[BucketState]:
        """Takes every charge or none: each bucket's state after the attempt, in order
        (a bucket that had room is given back what it gave when another had none)."""
        with self.store.write() as s:
            self._pay_owed(s)
            states = [self._take(s, c, now) for c in charges]
            if not all(st.admitted for st in states):
                for st in states:
                    if st.admitted:
                        _shift(s, st.charge.key, -st.charge.amount * st.charge.interval_s)
                states = [
                    BucketState(st.charge, True, st.full_at - _cost(st), now) if st.admitted else st
                    for st in states
                ]
        return states

    def give_back(self, charge: Charge) -> None:
        """Returns `charge.amount` units (a negative amount charges more after the fact), at
        the next transaction on the buckets or `settle_owed`, whichever comes first."""
        with self._lock:
            key = charge.key
            self._owed[key] = self._owed.get(key, 0.0) - charge.amount * charge.interval_s

    def settle_owed(self) -> None:
        """Applies the corrections owed now."""
        with self._lock:
            if not self._owed:
                return
        with self.store.write() as s:
            self._pay_owed(s)

    def _pay_owed(self, s: Session) -> None:
        """Applies what is owed inside the caller's transaction (holding the write lock on
        SQLite, so no admission of another thread runs between the taking and the paying)."""
        with self._lock:
            owed, self._owed = self._owed, {}
        for key, seconds in owed.items():
            _shift(s, key, seconds)

    def _take(self, s: Session, charge: Charge, now: float) -> BucketState:
        cost = charge.amount * charge.interval_s
        table = cast(Table, RateBucket.__table__)
        dialect = s.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        new = insert(table).values(
            key=charge.key, full_at=now + cost, admitted=cost <= WINDOW_S + SLACK_S
        )
        start = _later(dialect, literal(now, Float), table.c.full_at)
        fits = start + cost - now <= WINDOW_S + SLACK_S
        stmt = new.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "full_at": case((fits, start + cost), else_=table.c.full_at),
                "admitted": fits,
            },
        ).returning(table.c.full_at, table.c.admitted)
        full_at, admitted = s.execute(stmt).one()
        return BucketState(charge, bool(admitted), float(full_at), now)


def _cost(state: BucketState) -> float:
    return state.charge.amount * state.charge.interval_s


def _later(dialect: str, a: ColumnElement[float], b: ColumnElement[float]) -> ColumnElement[float]:
    """The later of two instants: SQLite's two-argument `max`, PostgreSQL's `greatest`."""
    if dialect == "postgresql":
        return func.greatest(a, b, type_=Float)
    return func.max(a, b, type_=Float)


def _shift(s: Session, key: str, seconds: float) -> None:
    """Moves a bucket's `full_at` by `seconds` (negative: gives units back). Never below the
    present level's meaning: a `full_at` in the past is simply a full bucket."""
    table = cast(Table, RateBucket.__table__)
    s.execute(
        update(table)
        .where(table.c.key == key)
        .values(full_at=table.c.full_at + literal(seconds, Float))
    )
