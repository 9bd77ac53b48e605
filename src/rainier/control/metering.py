"""Metering wired to the store: the pure core's lines, written where the facts change.

* Chip time: the reconciler calls `Metering.on_task_time` inside the transaction that observes
  a task, so the task's new `billed_until` and the lines of the slice up to it commit together
  or not at all. A crash anywhere leaves either both or neither, and the next tick bills the
  same span again from where the ledger stopped: nothing is lost and nothing billed twice.
* Periodic work (`Metering.tick`, from the reconciler's tick): tokens of the gateway's
  `token_usage` rows, reservation periods once every live task is billed past them, the
  true-up after a term, and spend alerts for contracts whose ledger moved.
* Webhooks: alerts are rows of `spend_alerts`, which doubles as the outbox; a thread of its own
  delivers them with retries, so a slow receiver never holds up the reconciler.

Lines are inserted with ON CONFLICT DO NOTHING on `key`, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count, islice
from operator import itemgetter
from typing import Any

import httpx
from sqlalchemy import Connection, and_, func, not_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rainier.metering import (
    ChipPrice,
    ContractTerms,
    PriceBook,
    Statement,
    TaskInterval,
    TokenPrice,
    TokenUsage,
    UsageLine,
    charge_interval,
    charge_tokens,
    crossed_thresholds,
    default_price_book,
    monthly_statement,
    next_slice,
    reservation_periods,
    settle_reservation,
    true_up,
)
from rainier.metering import webhook as signing
from rainier.metering.alerts import month_label
from rainier.metering.periods import month_bounds, stamp
from rainier.spec import ContractSpec
from rainier.store.db import Store
from rainier.store.keys import installation_secret
from rainier.store.tables import (
    Contract,
    Event,
    Job,
    MeteringCursor,
    PricePoint,
    SpendAlert,
    Task,
    Tenant,
    TokenUsageRecord,
    UsageLineRow,
    utcnow,
)

log = logging.getLogger("rainier.metering")

LINE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UsageLine))
LIVE_TASK_STATES = ("starting", "running")
NO_CONTRACT = ""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TOKEN_GRACE = timedelta(seconds=1)
_LINES = UsageLineRow.__table__


# -- writing lines ------------------------------------------------------------------------------


def line_row(line: UsageLine) -> dict[str, Any]:
    return {name: getattr(line, name) for name in LINE_FIELDS}


def _insert_ignoring_duplicates(dialect: str) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(_LINES).on_conflict_do_nothing(index_elements=["key"])


def insert_lines(s: Session | Connection, lines: Sequence[UsageLine]) -> None:
    """Adds the lines to the caller's transaction; a line whose key is stored already is skipped."""
    if not lines:
        return
    dialect = s.get_bind().dialect.name if isinstance(s, Session) else s.dialect.name
    s.execute(_insert_ignoring_duplicates(dialect), [line_row(line) for line in lines])


_STAMPS: dict[timedelta, str] = {}


def _sqlite_stamp(at: datetime) -> str:
    """What `UTCDateTime` stores on SQLite, without going through SQLAlchemy per value (lines
    share their hour boundaries, so the spelling of each instant is kept once made). The cache
    is keyed by the time since the epoch: hashing a new aware datetime costs twice as much as
    subtracting the epoch and hashing the difference (a naive one raises here, as it would in
    `UTCDateTime`)."""
    since = at - _EPOCH
    text = _STAMPS.get(since)
    if text is None:
        if len(_STAMPS) > 100_000:
            _STAMPS.clear()
        utc = at if at.tzinfo is UTC else at.astimezone(UTC)
        text = _STAMPS[since] = utc.isoformat(" ", "microseconds")[:26]
    return text


def _micros(value: Decimal) -> int:
    """What `Micros` stores on SQLite. A value it cannot hold exactly is refused, not rounded
    (PostgreSQL's NUMERIC(24, 6) would round it silently, so its loads are checked here too)."""
    scaled = value.scaleb(6)
    whole = int(scaled)
    if whole != scaled:
        raise ValueError(f"{value} has more than 6 decimal places")
    return whole


def _sqlite_values(line: UsageLine) -> tuple[Any, ...]:
    return (*_sqlite_row(line, {}), line.corrects, line.corrects_kind)


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


def _sqlite_uncorrected_rows(
    lines: Iterable[UsageLine], corrections: list[UsageLine]
) -> Iterator[tuple[Any, ...]]:
    """The values of each line as SQLite stores them, made as the driver asks for them (so a
    load of any size is never held in memory twice); lines with `corrects` set are put aside
    for the statement that binds those columns."""
    micros: dict[str, int] = {}
    for line in lines:
        if line.corrects is not None or line.corrects_kind is not None:
            corrections.append(line)
            continue
        yield _sqlite_row(line, micros)


def _sqlite_row(line: UsageLine, micros: dict[str, int]) -> tuple[Any, ...]:
    """A line's values as SQLite stores them, but for the two nullable columns. Amounts
    repeat (a steady job's hourly lines, reservations, a fixed chip count times an hour), so
    `micros` keeps each one's conversion by its spelling: `str` of a Decimal costs a fifth of
    hashing a new one, and a third of the three Decimal operations of `_micros`."""
    qs, amount, list_amount = str(line.quantity), str(line.amount_usd), str(line.list_amount_usd)
    try:
        q, a, la = micros[qs], micros[amount], micros[list_amount]
    except KeyError:
        if len(micros) > 100_000:
            micros.clear()
        q = micros[qs] = _micros(line.quantity)
        a = micros[amount] = _micros(line.amount_usd)
        la = micros[list_amount] = _micros(line.list_amount_usd)
    # `str` spells a Decimal as format "f" does unless it chooses an exponent, and costs a
    # third of it. (A cache keyed by the Decimal would not do: 4.5 == 4.50.)
    rate, list_rate = str(line.rate_usd), str(line.list_rate_usd)
    if "E" in rate:
        rate = format(line.rate_usd, "f")
    if "E" in list_rate:
        list_rate = format(line.list_rate_usd, "f")
    return (
        line.key,
        line.tenant,
        line.contract,
        line.kind,
        line.source,
        line.resource,
        line.sku,
        _sqlite_stamp(line.period_start),
        _sqlite_stamp(line.period_end),
        q,
        line.unit,
        rate,
        line.pricing_unit,
        a,
        list_rate,
        la,
        line.price_book_version,
        line.description,
    )


def _ingest_sqlite(conn: Connection, lines: Iterable[UsageLine]) -> None:
    """One executemany over a generator: no per-row Python beyond making the values. The page
    cache is widened for the load, so that the pages the transaction dirtied stay in memory
    until the commit writes them once instead of spilling them to the WAL again and again;
    the connection goes back to the pool as it came."""
    raw: Any = conn.connection.driver_connection
    cursor = raw.cursor()
    try:
        (cache_size,) = cursor.execute("PRAGMA cache_size").fetchone()
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_BULK_CACHE_KIB}")
        try:
            corrections: list[UsageLine] = []
            cursor.executemany(
                _SQLITE_INSERT_UNCORRECTED, _sqlite_uncorrected_rows(lines, corrections)
            )
            if corrections:
                cursor.executemany(_SQLITE_INSERT, map(_sqlite_values, corrections))
        finally:
            cursor.execute(f"PRAGMA cache_size={int(cache_size)}")
    finally:
        cursor.close()


def _copy_postgres(conn: Connection, lines: Iterable[UsageLine]) -> None:
    """COPY into a scratch table, then one INSERT ... ON CONFLICT DO NOTHING from it."""
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS usage_lines_in "
            "(LIKE usage_lines INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY usage_lines_in ({_COLUMNS}) FROM STDIN") as copy:
            for line in lines:
                for value in (line.quantity, line.amount_usd, line.list_amount_usd):
                    _micros(value)
                copy.write_row(tuple(getattr(line, name) for name in LINE_FIELDS))
        cur.execute(
            f"INSERT INTO usage_lines ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_lines_in "
            "ON CONFLICT (key) DO NOTHING"
        )


def ingest_lines(store: Store, lines: Iterable[UsageLine], batch: int | None = None) -> int:
    """Bulk load (imports, benchmarks); returns how many lines were handed in. Lines whose key
    is stored already (or came earlier in `lines`) are skipped. All lines go in one transaction,
    so an error anywhere (a value the ledger cannot hold exactly, a lost connection) leaves the
    ledger as it was; `batch` commits every that many lines instead, for a load too long to
    hold the write lock throughout. On SQLite the values are converted here and handed to the
    driver as they are stored; on PostgreSQL they are COPYed. The round trip through the
    ORM's reading is tested."""
    counter = count()
    # zip stops at the end of `lines` before it advances the counter, so the counter holds how
    # many lines were taken (plus one per earlier look at it), without a Python call per line.
    source = map(itemgetter(0), zip(lines, counter, strict=False))
    taken = looks = 0
    while True:
        chunk = source if batch is None else islice(source, batch)
        with store.engine.begin() as conn:
            if store.is_sqlite:
                _ingest_sqlite(conn, chunk)
            else:
                _copy_postgres(conn, chunk)
        before, taken = taken, next(counter) - looks
        looks += 1
        if batch is None or taken - before < batch:
            return taken


def row_line(row: Any) -> UsageLine:
    return UsageLine(**{name: getattr(row, name) for name in LINE_FIELDS})  # type: ignore[arg-type]


def select_lines(
    *,
    contract: str | None = None,
    tenant: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    """Lines by the indexed columns: a contract or a tenant, period start in [since, until).
    The index leads with the tenant, so a contract given without its tenant has the tenant
    looked up (every line of a contract is its tenant's, see `charges`)."""
    query = select(*(_LINES.c[name] for name in LINE_FIELDS))
    if contract is not None:
        query = query.where(_LINES.c.contract == contract)
        if tenant is None:
            query = query.where(_LINES.c.tenant == _tenant_of(contract))
    if tenant is not None:
        query = query.where(_LINES.c.tenant == tenant)
    if since is not None:
        query = query.where(_LINES.c.period_start >= since)
    if until is not None:
        query = query.where(_LINES.c.period_start < until)
    return query.order_by(_LINES.c.period_start, _LINES.c.key)


def _tenant_of(contract: str) -> Any:
    return (
        select(Tenant.name)
        .join(Contract, Contract.tenant_id == Tenant.id)
        .where(Contract.name == contract)
        .scalar_subquery()
    )


def _of_contract(terms: ContractTerms) -> Any:
    """The lines of the contract, by the index: its tenant's, then the contract."""
    return and_(_LINES.c.tenant == terms.tenant, _LINES.c.contract == terms.contract)


def iter_lines(s: Session, query: Any) -> Iterator[UsageLine]:
    for row in s.execute(query):
        yield row_line(row)


def _draws_down(terms: ContractTerms) -> Any:
    """`rainier.metering.draws_down` as a WHERE clause."""
    c = _LINES.c
    return and_(
        _of_contract(terms),
        c.kind != "true_up",
        not_(and_(c.kind == "correction", c.corrects_kind == "true_up")),
        c.period_start >= terms.start,
        c.period_start < terms.end,
        c.period_end <= terms.end,
    )


def drawn_usd(s: Session, terms: ContractTerms, before: datetime | None = None) -> Decimal:
    """The commitment drawn so far (lines starting before `before`), summed by the database."""
    query = select(func.sum(_LINES.c.amount_usd)).where(_draws_down(terms))
    if before is not None:
        query = query.where(_LINES.c.period_start < before)
    return Decimal(s.scalar(query) or 0)


def stored_statement(s: Session, terms: ContractTerms, year: int, month: int) -> Statement:
    """`monthly_statement` over only that month's lines of the contract (one index range), with
    what was drawn before the month summed by the database."""
    start, end = month_bounds(year, month)
    lines = iter_lines(
        s, select_lines(contract=terms.contract, tenant=terms.tenant, since=start, until=end)
    )
    st = monthly_statement(terms, lines, year, month)
    before = drawn_usd(s, terms, before=start)
    return replace(
        st,
        drawn_before_usd=before,
        remaining_usd=terms.committed_usd - before - st.drawn_in_period_usd,
    )


# -- prices and terms ---------------------------------------------------------------------------


def load_price_book(s: Session) -> PriceBook:
    """The newest version in `price_points`, or the default book when the operator set none."""
    version = s.scalar(select(func.max(PricePoint.version)))
    if version is None:
        return default_price_book()
    rows = s.scalars(select(PricePoint).where(PricePoint.version == version)).all()
    chips = tuple(ChipPrice(r.sku, r.usd, r.effective_from) for r in rows if r.kind == "chip")
    tokens = tuple(
        TokenPrice(r.sku, r.usd, r.output_usd or Decimal(0), r.effective_from)
        for r in rows
        if r.kind == "token"
    )
    return PriceBook(version=version, chip_prices=chips, token_prices=tokens)


def contract_terms(row: Contract) -> ContractTerms:
    return ContractTerms.from_spec(ContractSpec.model_validate(row.spec), row.name)


def _uncontracted(tenant: str) -> ContractTerms:
    """Usage of a tenant without any contract: billed at list price, drawing nothing down."""
    return ContractTerms(
        contract=NO_CONTRACT,
        tenant=tenant,
        start=_EPOCH,
        end=_EPOCH + timedelta(microseconds=1),
        committed_usd=Decimal(0),
    )


def _contract_at(contracts: Sequence[ContractTerms], at: datetime) -> ContractTerms | None:
    """The contract whose term holds `at`; else the last one begun before it; else the first."""
    if not contracts:
        return None
    ordered = sorted(contracts, key=lambda t: (t.start, t.contract))
    for terms in ordered:
        if terms.start <= at < terms.end:
            return terms
    begun = [t for t in ordered if t.start <= at]
    return begun[-1] if begun else ordered[0]


def _segments(
    contracts: Sequence[ContractTerms], tenant: str, start: datetime, end: datetime
) -> list[tuple[ContractTerms, datetime, datetime]]:
    """[start, end) split where one contract's term ends and the next one's begins."""
    out = []
    while start < end:
        terms = _contract_at(contracts, start) or _uncontracted(tenant)
        cut = end
        if terms.contract != NO_CONTRACT:
            for other in contracts:
                if start < other.start < cut:
                    cut = other.start
            if terms.start <= start < terms.end:
                cut = min(cut, terms.end)
        out.append((terms, start, cut))
        start = cut
    return out


def tenant_contracts(s: Session, tenant_id: str) -> list[ContractTerms]:
    rows = s.scalars(select(Contract).where(Contract.tenant_id == tenant_id)).all()
    return [contract_terms(r) for r in rows]


def record_tokens(s: Session, usage: TokenUsage, prices: PriceBook | None = None) -> list[str]:
    """Prices one request's tokens in the caller's transaction; `usage.contract` may be empty
    (the tenant's contract at `usage.at` is used). Returns the contracts whose ledger moved."""
    tenant = s.scalars(select(Tenant).where(Tenant.name == usage.tenant)).one_or_none()
    contracts = tenant_contracts(s, tenant.id) if tenant is not None else []
    named = [t for t in contracts if t.contract == usage.contract]
    terms = (named[0] if named else _contract_at(contracts, usage.at)) or _uncontracted(
        usage.tenant
    )
    priced = TokenUsage(
        tenant=usage.tenant,
        contract=terms.contract,
        deployment=usage.deployment,
        request_id=usage.request_id,
        model=usage.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        at=usage.at,
    )
    lines = charge_tokens(priced, terms, prices or load_price_book(s))
    insert_lines(s, lines)
    return [terms.contract] if lines else []


def webhook_secret(store: Store, contract: str) -> str:
    """The contract's signing secret, derived (never stored): the tenant reads it from the API."""
    mac = hmac.new(installation_secret(store), f"webhook\x1f{contract}".encode(), hashlib.sha256)
    return mac.hexdigest()


# -- the reconciler's side ----------------------------------------------------------------------


@dataclass
class Metering:
    """`min_slice_s`: a live task is billed once its unbilled span reaches this (and always when
    it exits), so the ledger grows by a line per task per slice, not per tick.
    `settle_delay_s`: reservation periods are settled this long after they close at the
    earliest (and never before every live task is billed past them)."""

    store: Store
    min_slice_s: float = 60.0
    settle_delay_s: float = 5.0
    alert_every_s: float = 2.0
    settle_every_s: float = 1.0
    retry_base_s: float = 10.0
    max_attempts: int = 8
    _dirty: set[str] = field(default_factory=set)
    _checked_all: bool = False
    _last_alert_check: float = 0.0
    _last_settle: datetime | None = None
    _prices: tuple[int | None, PriceBook] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _failing: set[tuple[str, str]] = field(default_factory=set)
    wake: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def from_env(cls, store: Store) -> Metering:
        env = os.environ
        return cls(
            store,
            min_slice_s=float(env.get("RAINIER_METERING_SLICE_S", "60")),
            settle_delay_s=float(env.get("RAINIER_METERING_SETTLE_DELAY_S", "5")),
            retry_base_s=float(env.get("RAINIER_WEBHOOK_RETRY_BASE_S", "10")),
        )

    def prices(self, s: Session) -> PriceBook:
        version = s.scalar(select(func.max(PricePoint.version)))
        if self._prices is None or self._prices[0] != version:
            self._prices = (version, load_price_book(s))
        return self._prices[1]

    def _touched(self, contracts: Iterable[str]) -> None:
        with self._lock:
            self._dirty.update(c for c in contracts if c != NO_CONTRACT)

    def on_task_time(self, s: Session, job: Job, task: Task, until: datetime) -> None:
        """Bills the task's chips from `billed_until` up to `until` in the caller's transaction."""
        if task.started_at is None or task.chips == 0:
            return
        ended = task.state not in LIVE_TASK_STATES
        span = next_slice(task.started_at, task.billed_until, until, until if ended else None)
        if span is None:
            return
        start, end = span
        if not ended and (end - start).total_seconds() < self.min_slice_s:
            return
        try:
            with s.begin_nested():
                tenant = s.get(Tenant, job.tenant_id)
                name = tenant.name if tenant is not None else job.tenant_id
                contracts = tenant_contracts(s, job.tenant_id)
                prices = self.prices(s)
                lines: list[UsageLine] = []
                for terms, a, b in _segments(contracts, name, start, end):
                    interval = TaskInterval(
                        tenant=name,
                        contract=terms.contract,
                        job_id=job.id,
                        task_id=task.id,
                        flavor=job.flavor,
                        chips=task.chips,
                        start=a,
                        end=b,
                    )
                    lines += charge_interval(interval, terms, prices)
                insert_lines(s, lines)
                task.billed_until = end
        except Exception:
            log.exception("cannot bill task %s; it is billed on a later tick", task.id)
            return
        self._touched(line.contract for line in lines)

    def tick(self, now: datetime | None = None) -> None:
        """The periodic part; each step is a no-op query or two when there is nothing to do."""
        now = now or utcnow()
        for step in (self._price_tokens, self._settle, self._alerts):
            try:
                step(now)
            except Exception:
                log.exception("metering step %s failed; retrying next tick", step.__name__)

    @contextlib.contextmanager
    def _isolated(self, row: Contract, step: str) -> Iterator[None]:
        """One contract whose billing fails does not stop the others': the failure is logged
        and put on the contract's events (once per server run), and retried next tick."""
        try:
            yield
        except Exception as exc:
            log.exception("%s of contract %s failed; the other contracts go on", step, row.name)
            if (row.name, step) in self._failing:
                return
            self._failing.add((row.name, step))
            with contextlib.suppress(Exception), self.store.write() as s:
                s.add(
                    Event(
                        object_id=row.id,
                        tenant_id=row.tenant_id,
                        kind="billing-failed",
                        message=f"{step} failed: {type(exc).__name__}: {exc}"[:1000],
                    )
                )

    # -- tokens ---------------------------------------------------------------------------

    def _price_tokens(self, now: datetime) -> None:
        """Rows are priced in id order; a row is taken once it is a second old, so a row whose
        transaction committed after a later id's is still seen."""
        with self.store.write() as s:
            cursor = s.get(MeteringCursor, "token_usage")
            after = cursor.value if cursor is not None and cursor.value is not None else 0
            rows = s.scalars(
                select(TokenUsageRecord)
                .where(TokenUsageRecord.id > after, TokenUsageRecord.at <= now - _TOKEN_GRACE)
                .order_by(TokenUsageRecord.id)
                .limit(5000)
            ).all()
            if not rows:
                return
            names = {t.id: t.name for t in s.scalars(select(Tenant))}
            contracts: dict[str, list[ContractTerms]] = {}
            prices = self.prices(s)
            lines: list[UsageLine] = []
            for r in rows:
                tenant = names.get(r.tenant_id, r.tenant_id)
                if r.tenant_id not in contracts:
                    contracts[r.tenant_id] = tenant_contracts(s, r.tenant_id)
                terms = _contract_at(contracts[r.tenant_id], r.at) or _uncontracted(tenant)
                usage = TokenUsage(
                    tenant=tenant,
                    contract=terms.contract,
                    deployment=r.deployment,
                    request_id=r.request_id,
                    model=r.model,
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    at=r.at,
                )
                lines += charge_tokens(usage, terms, prices)
            insert_lines(s, lines)
            if cursor is None:
                cursor = MeteringCursor(name="token_usage")
                s.add(cursor)
            cursor.value = rows[-1].id
        self._touched(line.contract for line in lines)

    # -- reservations and true-ups --------------------------------------------------------

    def _horizon(self, s: Session, now: datetime) -> datetime:
        """Every chip-second before this instant is on the ledger already."""
        horizon = now - timedelta(seconds=self.settle_delay_s)
        live = s.scalar(
            select(func.min(func.coalesce(Task.billed_until, Task.started_at))).where(
                Task.state.in_(LIVE_TASK_STATES), Task.started_at.is_not(None)
            )
        )
        if live is not None:
            horizon = min(horizon, live.replace(tzinfo=UTC) if live.tzinfo is None else live)
        return horizon

    def _settle(self, now: datetime, max_periods: int = 500) -> None:
        if (
            self._last_settle is not None
            and abs((now - self._last_settle).total_seconds()) < self.settle_every_s
        ):
            return
        self._last_settle = now
        with self.store.read() as s:
            rows = s.scalars(select(Contract).where(Contract.term_start < now)).all()
            cursors = {c.name: c for c in s.scalars(select(MeteringCursor))}
            horizon = self._horizon(s, now)
        for row in rows:
            with self._isolated(row, "settling reservations"):
                self._settle_contract(row, cursors, horizon, now, max_periods)

    def _settle_contract(
        self,
        row: Contract,
        cursors: dict[str, MeteringCursor],
        horizon: datetime,
        now: datetime,
        max_periods: int,
    ) -> None:
        terms = contract_terms(row)
        done = True
        for flavor in sorted(terms.guaranteed_chips):
            name = f"reservation:{terms.contract}:{flavor}"
            cursor = cursors.get(name)
            since = cursor.at if cursor is not None and cursor.at is not None else terms.start
            if since < terms.end:
                self._settle_flavor(terms, flavor, name, since, horizon, max_periods)
                done = False
        true_up_done = f"true_up:{terms.contract}" in cursors
        if done and not true_up_done and terms.end <= horizon:
            self._true_up(terms, now)

    def _settle_flavor(
        self,
        terms: ContractTerms,
        flavor: str,
        cursor_name: str,
        since: datetime,
        horizon: datetime,
        max_periods: int,
    ) -> None:
        with self.store.write() as s:
            prices = self.prices(s)
            periods = reservation_periods(terms, flavor, prices, since, horizon)[:max_periods]
            if not periods:
                return
            c = _LINES.c
            lines: list[UsageLine] = []
            for a, b in periods:
                used = s.scalar(
                    select(func.sum(c.quantity)).where(
                        _of_contract(terms),
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
        self._touched([terms.contract])

    def _true_up(self, terms: ContractTerms, now: datetime) -> None:
        with self.store.write() as s:
            prices = self.prices(s)
            lines = iter_lines(s, select_lines(contract=terms.contract, tenant=terms.tenant))
            line = true_up(terms, lines, max(now, terms.end), prices)
            insert_lines(s, [line] if line is not None else [])
            s.add(MeteringCursor(name=f"true_up:{terms.contract}", at=now))

    # -- alerts ---------------------------------------------------------------------------

    def _alerts(self, now: datetime) -> None:
        if time.monotonic() - self._last_alert_check < self.alert_every_s:
            return
        self._last_alert_check = time.monotonic()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        with self.store.read() as s:
            query = select(Contract)
            if self._checked_all:
                if not dirty:
                    return
                query = query.where(Contract.name.in_(sorted(dirty)))
            rows = s.scalars(query).all()
        self._checked_all = True
        fired = False
        for row in rows:
            with self._isolated(row, "checking spend alerts"):
                fired |= self.check_alerts(row, now)
        if fired:
            self.wake.set()

    def check_alerts(self, row: Contract, now: datetime) -> bool:
        """Records (once, by key) each threshold the contract's spend has reached."""
        terms = contract_terms(row)
        spec = ContractSpec.model_validate(row.spec)
        with self.store.write() as s:
            spent = drawn_usd(s, terms)
            events = crossed_thresholds(
                tenant=terms.tenant,
                contract=terms.contract,
                scope="commitment",
                period=f"{stamp(terms.start)}/{stamp(terms.end)}",
                limit_usd=terms.committed_usd,
                spent_before_usd=Decimal(-1),
                spent_after_usd=spent,
                at=now,
            )
            if spec.monthly_budget_usd is not None:
                month = month_label(now)
                start, end = month_bounds(now.year, now.month)
                c = _LINES.c
                month_spent = s.scalar(
                    select(func.sum(c.amount_usd)).where(
                        _of_contract(terms),
                        c.kind != "true_up",
                        c.period_start >= start,
                        c.period_start < end,
                    )
                )
                events += crossed_thresholds(
                    tenant=terms.tenant,
                    contract=terms.contract,
                    scope="budget",
                    period=month,
                    limit_usd=spec.monthly_budget_usd,
                    spent_before_usd=Decimal(-1),
                    spent_after_usd=Decimal(month_spent or 0),
                    at=now,
                )
            known = set(
                s.scalars(select(SpendAlert.key).where(SpendAlert.key.in_([e.key for e in events])))
            )
            fired = False
            for event in events:
                if event.key in known:
                    continue
                url = spec.alert_webhook_url or ""
                s.add(
                    SpendAlert(
                        key=event.key,
                        contract=terms.contract,
                        tenant_id=row.tenant_id,
                        payload=event.payload(),
                        at=now,
                        url=url,
                        next_attempt_at=now if url else None,
                    )
                )
                what = (
                    "the commitment"
                    if event.scope == "commitment"
                    else f"the {event.period} budget"
                )
                s.add(
                    Event(
                        object_id=row.id,
                        tenant_id=row.tenant_id,
                        kind="alert",
                        message=(
                            f"spend reached {event.threshold_pct}% of {what}: "
                            f"{event.spent_usd:.2f} of {event.limit_usd:.2f} USD"
                        ),
                    )
                )
                fired = True
        return fired

    # -- webhook delivery -----------------------------------------------------------------

    def deliver_pending(self, client: httpx.Client, now: datetime | None = None) -> int:
        """Sends every alert that is due; returns how many were delivered."""
        now = now or utcnow()
        with self.store.read() as s:
            due = s.scalars(
                select(SpendAlert)
                .where(
                    SpendAlert.delivered_at.is_(None),
                    SpendAlert.url != "",
                    SpendAlert.next_attempt_at <= now,
                    SpendAlert.attempts < self.max_attempts,
                )
                .order_by(SpendAlert.at)
                .limit(100)
            ).all()
        delivered = 0
        for alert in due:
            if not self._claim(alert, now):
                continue
            body = signing.body(alert.payload)
            secret = webhook_secret(self.store, alert.contract).encode()
            header = signing.sign(secret, body, int(time.time()))
            error = ""
            try:
                r = client.post(
                    alert.url,
                    content=body,
                    headers={"content-type": "application/json", signing.SIGNATURE_HEADER: header},
                )
                if not 200 <= r.status_code < 300:
                    error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self.store.write() as s:
                row = s.get(SpendAlert, alert.key)
                if row is None:
                    continue
                row.attempts += 1
                if error:
                    row.last_error = error
                    delay = signing.retry_delay_s(row.attempts, base_s=self.retry_base_s)
                    row.next_attempt_at = utcnow() + timedelta(seconds=delay)
                else:
                    row.delivered_at, row.last_error = utcnow(), ""
                    delivered += 1
        return delivered

    def _claim(self, alert: SpendAlert, now: datetime) -> bool:
        """Moves the alert's next attempt out of reach, so a second server does not send it too."""
        with self.store.write() as s:
            claimed = s.execute(
                update(SpendAlert)
                .where(
                    SpendAlert.key == alert.key,
                    SpendAlert.delivered_at.is_(None),
                    SpendAlert.next_attempt_at == alert.next_attempt_at,
                )
                .values(next_attempt_at=now + timedelta(seconds=60))
            )
            return bool(getattr(claimed, "rowcount", 0))

    def run_webhooks(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not stop.is_set():
                try:
                    self.deliver_pending(client)
                except Exception:
                    log.exception("webhook delivery failed; retrying")
                self.wake.wait(poll_s)
                self.wake.clear()

    def start_webhooks(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_webhooks, args=(stop,), daemon=True, name="webhooks"
        )
        thread.start()
        return thread
