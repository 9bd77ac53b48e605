"""Delivery of spend alerts to the contract's webhook: `spend_alerts` is the outbox, and a
thread of its own sends what is due with retries, so a slow receiver never holds up the
reconciler. Each alert is claimed before it is sent, so two servers do not both send it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update

from rainier.metering import webhook as signing
from rainier.store.db import Store
from rainier.store.keys import installation_secret
from rainier.store.tables import SpendAlert, utcnow

log = logging.getLogger("rainier.metering")


def webhook_secret(store: Store, contract: str) -> str:
    """The contract's signing secret, derived (never stored): the tenant reads it from the API."""
    mac = hmac.new(installation_secret(store), f"webhook\x1f{contract}".encode(), hashlib.sha256)
    return mac.hexdigest()


@dataclass
class WebhookSender:
    """`wake` is set when a new alert is recorded, so it goes out without waiting a poll."""

    store: Store
    retry_base_s: float = 10.0
    max_attempts: int = 8
    wake: threading.Event = field(default_factory=threading.Event)

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

    def run(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not stop.is_set():
                try:
                    self.deliver_pending(client)
                except Exception:
                    log.exception("webhook delivery failed; retrying")
                self.wake.wait(poll_s)
                self.wake.clear()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True, name="webhooks")
        thread.start()
        return thread
