"""Bulk loads of ledger lines (imports, benchmarks) through the store's `BatchWriter`.

The values are encoded by the column types of `rainier.store.tables` themselves (their SQLite
bind processors); this module only keeps each encoding once made, because a year of hourly
lines repeats the same instants and amounts over and over, and hands the driver the rows as it
asks for them: one executemany on SQLite, COPY on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from rainier.accounting.ledger_rows import LINE_FIELDS, LINES
from rainier.metering import UsageLine
from rainier.store.batch_writer import BatchWriter
from rainier.store.db import Store

_SQLITE = sqlite.dialect()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sqlite_encoder(column: str) -> Callable[[Any], Any]:
    """What the column's type stores on SQLite for a value (the type's own bind processor)."""
    kind = LINES.c[column].type.dialect_impl(_SQLITE)
    processor = kind.bind_processor(_SQLITE)
    if processor is None:
        raise TypeError(f"usage_lines.{column} has no SQLite encoding")
    return processor


_stored_instant = _sqlite_encoder("period_start")
_stored_micros = _sqlite_encoder("amount_usd")  # Micros: refuses more than 6 decimal places
_stored_rate = _sqlite_encoder("rate_usd")
assert _sqlite_encoder("period_end") is not None and _sqlite_encoder("quantity") is not None

_COLUMNS = ", ".join(LINE_FIELDS)
_NULLABLE = ("corrects", "corrects_kind")
assert LINE_FIELDS[-len(_NULLABLE) :] == _NULLABLE
_SQLITE_INSERT = (
    f"INSERT INTO usage_lines ({_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in LINE_FIELDS)}) ON CONFLICT (key) DO NOTHING"
)
# Python's sqlite3 binds None through its adapter lookup, several times slower than a value;
# lines that correct nothing (nearly all) leave the two nullable columns to SQL.
_SQLITE_INSERT_UNCORRECTED = (
    f"INSERT INTO usage_lines ({_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in LINE_FIELDS[: -len(_NULLABLE)])}, NULL, NULL) "
    "ON CONFLICT (key) DO NOTHING"
)
_SQLITE_BULK_CACHE_KIB = 512 * 1024
_CACHE_LIMIT = 100_000


class _SqliteEncodings:
    """Each value's stored spelling, kept by a cheap key: instants by their time since the
    epoch (hashing a new aware datetime costs twice as much as subtracting the epoch and
    hashing the difference), amounts and rates by `str` (a fifth of hashing a new Decimal;
    a cache keyed by the Decimal would not do: 4.5 == 4.50)."""

    def __init__(self) -> None:
        self.instants: dict[timedelta, Any] = {}
        self.decimals: dict[str, Any] = {}
        self.rates: dict[str, Any] = {}

    def instant(self, at: datetime) -> Any:
        since = at - _EPOCH
        text = self.instants.get(since)
        if text is None:
            if len(self.instants) > _CACHE_LIMIT:
                self.instants.clear()
            text = self.instants[since] = _stored_instant(at)
        return text

    def row(self, line: UsageLine) -> tuple[Any, ...]:
        """A line's values as SQLite stores them, but for the two nullable columns."""
        d, r = self.decimals, self.rates
        qs, amount, list_amount = (
            str(line.quantity),
            str(line.amount_usd),
            str(line.list_amount_usd),
        )
        rate, list_rate = str(line.rate_usd), str(line.list_rate_usd)
        try:
            q, a, la, rt, lr = d[qs], d[amount], d[list_amount], r[rate], r[list_rate]
        except KeyError:
            if len(d) > _CACHE_LIMIT or len(r) > _CACHE_LIMIT:
                d.clear()
                r.clear()
            q = d[qs] = _stored_micros(line.quantity)
            a = d[amount] = _stored_micros(line.amount_usd)
            la = d[list_amount] = _stored_micros(line.list_amount_usd)
            rt = r[rate] = _stored_rate(line.rate_usd)
            lr = r[list_rate] = _stored_rate(line.list_rate_usd)
        return (
            line.key,
            line.tenant,
            line.contract,
            line.kind,
            line.source,
            line.resource,
            line.sku,
            self.instant(line.period_start),
            self.instant(line.period_end),
            q,
            line.unit,
            rt,
            line.pricing_unit,
            a,
            lr,
            la,
            line.price_book_version,
            line.description,
        )


def _uncorrected_rows(
    lines: Iterable[UsageLine], corrections: list[UsageLine], enc: _SqliteEncodings
) -> Iterator[tuple[Any, ...]]:
    """The values of each line as SQLite stores them, made as the driver asks for them; lines
    with `corrects` set are put aside for the statement that binds those columns."""
    for line in lines:
        if line.corrects is not None or line.corrects_kind is not None:
            corrections.append(line)
            continue
        yield enc.row(line)


def _load_sqlite(s: Session, lines: Iterable[UsageLine]) -> None:
    """One executemany over a generator: no per-row Python beyond making the values. The page
    cache is widened for the load, so that the pages the transaction dirtied stay in memory
    until the commit writes them once instead of spilling them to the WAL again and again;
    the connection goes back to the pool as it came."""
    raw: Any = s.connection().connection.driver_connection
    cursor = raw.cursor()
    enc = _SqliteEncodings()
    try:
        (cache_size,) = cursor.execute("PRAGMA cache_size").fetchone()
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_BULK_CACHE_KIB}")
        try:
            corrections: list[UsageLine] = []
            cursor.executemany(
                _SQLITE_INSERT_UNCORRECTED, _uncorrected_rows(lines, corrections, enc)
            )
            if corrections:
                rows = ((*enc.row(c), c.corrects, c.corrects_kind) for c in corrections)
                cursor.executemany(_SQLITE_INSERT, rows)
        finally:
            cursor.execute(f"PRAGMA cache_size={int(cache_size)}")
    finally:
        cursor.close()


def _copy_postgres(s: Session, lines: Iterable[UsageLine]) -> None:
    """COPY into a scratch table, then one INSERT ... ON CONFLICT DO NOTHING from it. Amounts
    are checked as SQLite would store them: NUMERIC(24, 6) would round a finer one silently."""
    raw: Any = s.connection().connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS usage_lines_in "
            "(LIKE usage_lines INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY usage_lines_in ({_COLUMNS}) FROM STDIN") as copy:
            for line in lines:
                for value in (line.quantity, line.amount_usd, line.list_amount_usd):
                    _stored_micros(value)
                copy.write_row(tuple(getattr(line, name) for name in LINE_FIELDS))
        cur.execute(
            f"INSERT INTO usage_lines ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_lines_in "
            "ON CONFLICT (key) DO NOTHING"
        )


def _load(s: Session, lines: Iterable[UsageLine]) -> None:
    if s.get_bind().dialect.name == "sqlite":
        _load_sqlite(s, lines)
    else:
        _copy_postgres(s, lines)


def ingest_lines(store: Store, lines: Iterable[UsageLine], batch: int | None = None) -> int:
    """Bulk load; returns how many lines were handed in. Lines whose key is stored already (or
    came earlier in `lines`) are skipped. All lines go in one transaction, so an error anywhere
    (a value the ledger cannot hold exactly, a lost connection) leaves the ledger as it was;
    `batch` commits every that many lines instead, for a load too long to hold the write lock
    throughout. The round trip through the ORM's reading is tested."""
    writer: BatchWriter[UsageLine, None] = BatchWriter(store, _load, name="ledger-bulk-load")
    return writer.write_all(lines, batch)
