"""Spend alerts: each threshold of a contract's commitment or monthly budget that its ledger
has reached is recorded once, as a `spend_alerts` row (the webhooks' outbox) and an event."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select

from rainier.accounting.contract_lookup import contract_terms
from rainier.accounting.ledger_rows import LINES, drawn_usd, of_contract
from rainier.metering import crossed_thresholds
from rainier.metering.alerts import month_label
from rainier.metering.periods import month_bounds, stamp
from rainier.spec import ContractSpec
from rainier.store.db import Store
from rainier.store.tables import Contract, Event, SpendAlert


def check_alerts(store: Store, row: Contract, now: datetime) -> bool:
    """Records (once, by key) each threshold the contract's spend has reached; returns whether
    a new one was recorded."""
    terms = contract_terms(row)
    spec = ContractSpec.model_validate(row.spec)
    with store.write() as s:
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
            c = LINES.c
            month_spent = s.scalar(
                select(func.sum(c.amount_usd)).where(
                    of_contract(terms),
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
            what = "the commitment" if event.scope == "commitment" else f"the {event.period} budget"
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
