"""Metering wired to the store: the pure core's lines, written where the facts change.

* Chip time: the reconciler calls `Metering.on_task_time` inside the transaction that observes
  a task, so the task's new `billed_until` and the lines of the slice up to it commit together
  or not at all. A crash anywhere leaves either both or neither, and the next tick bills the
  same span again from where the ledger stopped: nothing is lost and nothing billed twice.
* Periodic work (`Metering.tick`, from the reconciler's tick): tokens of the gateway's
  `token_usage` rows, reservation periods once every live task is billed past them and the
  true-up after a term (`rainier.accounting.reservations`), and spend alerts for contracts whose
  ledger moved (`rainier.accounting.spend_alerts`), which `rainier.accounting.webhooks` delivers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rainier.accounting.contract_lookup import (
    NO_CONTRACT,
    contract_at,
    load_price_book,
    segments,
    tenant_contracts,
    uncontracted,
)
from rainier.accounting.ledger_rows import insert_lines
from rainier.accounting.reservations import LIVE_TASK_STATES, billed_horizon, settle_contract
from rainier.accounting.spend_alerts import check_alerts
from rainier.accounting.webhooks import WebhookSender
from rainier.metering import (
    ContractTerms,
    PriceBook,
    TaskInterval,
    TokenUsage,
    UsageLine,
    charge_interval,
    charge_tokens,
    next_slice,
)
from rainier.store.db import Store
from rainier.store.tables import (
    Contract,
    Event,
    Job,
    MeteringCursor,
    PricePoint,
    Task,
    Tenant,
    TokenUsageRecord,
    utcnow,
)

log = logging.getLogger("rainier.metering")
_TOKEN_GRACE = timedelta(seconds=1)


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
    webhooks: WebhookSender = field(init=False)

    def __post_init__(self) -> None:
        self.webhooks = WebhookSender(self.store, self.retry_base_s, self.max_attempts)

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
                for terms, a, b in segments(contracts, name, start, end):
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
                terms = contract_at(contracts[r.tenant_id], r.at) or uncontracted(tenant)
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
            horizon = billed_horizon(s, now, self.settle_delay_s)
        for row in rows:
            with self._isolated(row, "settling reservations"):
                if settle_contract(
                    self.store, self.prices, row, cursors, horizon, now, max_periods
                ):
                    self._touched([row.name])

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
            self.webhooks.wake.set()

    def check_alerts(self, row: Contract, now: datetime) -> bool:
        """Records (once, by key) each threshold the contract's spend has reached."""
        return check_alerts(self.store, row, now)

    def deliver_pending(self, client: httpx.Client, now: datetime | None = None) -> int:
        """Sends every alert that is due; returns how many were delivered."""
        return self.webhooks.deliver_pending(client, now)

    def start_webhooks(self, stop: threading.Event) -> threading.Thread:
        return self.webhooks.start(stop)
