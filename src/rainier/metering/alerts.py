"""Spend alerts: which thresholds a batch of new lines crossed, as events to deliver.

An alert fires when spend goes from below a threshold to at or above it, so feeding spend
forward batch by batch fires each threshold exactly once. Each event has a deterministic key
(contract, scope, period, threshold): should a correction lower spend and new usage raise it
again, the re-crossing has the same key and the store's unique constraint keeps one event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from rainier.metering.charges import committed_spend
from rainier.metering.ledger import UsageLine
from rainier.metering.periods import require_utc, stamp
from rainier.metering.terms import ContractTerms

DEFAULT_THRESHOLDS_PCT: tuple[int, ...] = (50, 80, 100)
Scope = Literal["commitment", "budget"]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    key: str
    tenant: str
    contract: str
    scope: Scope
    period: str
    threshold_pct: int
    limit_usd: Decimal
    spent_usd: Decimal
    at: datetime

    def payload(self) -> dict[str, str | int]:
        """The webhook body's fields (sign the JSON of this with `webhook.sign`)."""
        return {
            "type": f"{self.scope}.threshold_crossed",
            "key": self.key,
            "tenant": self.tenant,
            "contract": self.contract,
            "scope": self.scope,
            "period": self.period,
            "threshold_pct": self.threshold_pct,
            "limit_usd": str(self.limit_usd),
            "spent_usd": str(self.spent_usd),
            "at": stamp(self.at),
        }


def crossed_thresholds(
    *,
    tenant: str,
    contract: str,
    scope: Scope,
    period: str,
    limit_usd: Decimal,
    spent_before_usd: Decimal,
    spent_after_usd: Decimal,
    at: datetime,
    thresholds_pct: Sequence[int] = DEFAULT_THRESHOLDS_PCT,
) -> list[AlertEvent]:
    """Events for every threshold t with before < t% of limit <= after, lowest first."""
    if limit_usd <= 0:
        return []
    events = []
    for pct in sorted(set(thresholds_pct)):
        level = limit_usd * pct / 100
        if spent_before_usd < level <= spent_after_usd:
            raw = "\x1f".join((contract, scope, period, str(pct)))
            events.append(
                AlertEvent(
                    key=hashlib.sha256(raw.encode()).hexdigest(),
                    tenant=tenant,
                    contract=contract,
                    scope=scope,
                    period=period,
                    threshold_pct=pct,
                    limit_usd=limit_usd,
                    spent_usd=spent_after_usd,
                    at=require_utc(at),
                )
            )
    return events


def commitment_alerts(
    terms: ContractTerms,
    spent_before_usd: Decimal,
    new_lines: Iterable[UsageLine],
    at: datetime,
    thresholds_pct: Sequence[int] = DEFAULT_THRESHOLDS_PCT,
) -> list[AlertEvent]:
    """`spent_before_usd` is `committed_spend` of the ledger before `new_lines` were added."""
    after = spent_before_usd + committed_spend(terms, new_lines)
    return crossed_thresholds(
        tenant=terms.tenant,
        contract=terms.contract,
        scope="commitment",
        period=f"{stamp(terms.start)}/{stamp(terms.end)}",
        limit_usd=terms.committed_usd,
        spent_before_usd=spent_before_usd,
        spent_after_usd=after,
        at=at,
        thresholds_pct=thresholds_pct,
    )


def month_label(at: datetime) -> str:
    return require_utc(at).strftime("%Y-%m")


def budget_alerts(
    terms: ContractTerms,
    monthly_budget_usd: Decimal,
    spent_before_by_month: dict[str, Decimal],
    new_lines: Iterable[UsageLine],
    at: datetime,
    thresholds_pct: Sequence[int] = DEFAULT_THRESHOLDS_PCT,
) -> list[AlertEvent]:
    """Per calendar month ("YYYY-MM" of a line's period start) against a monthly budget.

    The budget counts every line of the contract (usage outside the term included), since it
    guards the tenant's monthly bill rather than the commitment.
    """
    added: dict[str, Decimal] = {}
    for line in new_lines:
        if line.contract == terms.contract and line.kind != "true_up":
            month = month_label(line.period_start)
            added[month] = added.get(month, Decimal(0)) + line.amount_usd
    events = []
    for month, amount in sorted(added.items()):
        before = spent_before_by_month.get(month, Decimal(0))
        events += crossed_thresholds(
            tenant=terms.tenant,
            contract=terms.contract,
            scope="budget",
            period=month,
            limit_usd=monthly_budget_usd,
            spent_before_usd=before,
            spent_after_usd=before + amount,
            at=at,
            thresholds_pct=thresholds_pct,
        )
    return events


def monthly_spend(terms: ContractTerms, lines: Iterable[UsageLine]) -> dict[str, Decimal]:
    """The `spent_before_by_month` of `budget_alerts`, from a ledger."""
    out: dict[str, Decimal] = {}
    for line in lines:
        if line.contract == terms.contract and line.kind != "true_up":
            month = month_label(line.period_start)
            out[month] = out.get(month, Decimal(0)) + line.amount_usd
    return out
