"""Plans and quotas for tenants: what a job would do before it is submitted, and where each
contract stands, read from the store and answered by the pure cores.

The scheduler's `plan` decides; `metering` prices. Prices come through `chip_rate` only, so
where list prices live (today the price book, by default `spec.FLAVORS`) is one function's
business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.accounting.contract_lookup import contract_terms, load_price_book
from rainier.accounting.ledger_rows import iter_lines, select_lines
from rainier.control.state import cluster_state
from rainier.metering import contract_status
from rainier.metering.prices import PriceNotFound
from rainier.scheduler import ClusterState, NodeInfo, Workload, reasons
from rainier.scheduler.plan import Outcome, Plan, can_ever_fit, plan
from rainier.spec import ContractSpec, JobSpec
from rainier.spec_stored import load_stored
from rainier.store.tables import Contract, Node

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class Rate:
    """What one chip-hour of a flavor costs a tenant now, and under which contract."""

    list_usd_per_chip_hour: Decimal
    discount: Decimal
    contract: str | None

    @property
    def usd_per_chip_hour(self) -> Decimal:
        return self.list_usd_per_chip_hour * (1 - self.discount)


def chip_rate(s: Session, tenant_id: str, flavor: str, at: datetime) -> Rate | None:
    """The contract's rate (list x (1 - discount)) for the tenant's contract in force at `at`,
    list price without one; None when the flavor has no price."""
    try:
        listed = load_price_book(s).chip_price_at(flavor, at).usd_per_chip_hour
    except PriceNotFound:
        return None
    row = s.scalars(
        select(Contract)
        .where(
            Contract.tenant_id == tenant_id,
            Contract.term_start <= at,
            Contract.term_end > at,
        )
        .order_by(Contract.name)
    ).first()
    if row is None:
        return Rate(listed, Decimal(0), None)
    return Rate(listed, contract_terms(row).discount, row.name)


def candidate(spec: JobSpec, tenant: str, now_s: float) -> Workload:
    return Workload(
        id="job-(planned)",
        tenant=tenant,
        flavor=spec.flavor,
        nodes=spec.nodes,
        chips_per_node=spec.chips_per_node,
        priority=spec.priority,
        within=spec.within,
        max_duration_s=spec.max_duration_s,
        submitted_s=now_s,
        preemptible=spec.preemptible,
        may_preempt_own=spec.may_preempt_own,
        grace_period_s=spec.grace_period_s,
    )


def job_plan(s: Session, spec: JobSpec, tenant_id: str, tenant: str) -> dict[str, object]:
    """The scheduler's answer for `spec` now, with its chips' split and price."""
    now_s = time.time()
    now = datetime.fromtimestamp(now_s, UTC)
    state: ClusterState = cluster_state(s, now_s)
    w = candidate(spec, tenant, now_s)
    answer: Plan = plan(state, w)
    rate = chip_rate(s, tenant_id, spec.flavor, now)
    chips = w.chips
    per_hour = None if rate is None else (rate.usd_per_chip_hour * chips).quantize(MICRO)
    total = None
    if per_hour is not None and spec.max_duration_s is not None:
        total = (per_hour * Decimal(str(spec.max_duration_s)) / 3600).quantize(CENT)
    reason = answer.reason
    reservation_at = None
    if answer.reservation_s is not None:
        reservation_at = datetime.fromtimestamp(answer.reservation_s, UTC)
        # the scheduler counts seconds on its caller's clock; here that is the wall clock
        when = reservation_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        reason = reason.replace(f"t={answer.reservation_s:.0f}", when)
    return {
        "outcome": answer.outcome.value,
        "runs_now": answer.outcome is Outcome.RUNS_NOW,
        "reason": reason,
        "nodes": list(answer.node_names),
        "flavor": spec.flavor,
        "chips": chips,
        "guaranteed_chips": answer.guaranteed_chips,
        "borrowed_chips": answer.borrowed_chips,
        "reservation_at": reservation_at,
        "preempts": list(answer.preempts),
        "contract": rate.contract if rate else None,
        "list_usd_per_chip_hour": rate.list_usd_per_chip_hour if rate else None,
        "discount": rate.discount if rate else None,
        "usd_per_hour": per_hour,
        "max_duration_s": spec.max_duration_s,
        "estimated_total_usd": total,
    }


def never_fits(s: Session, w: Workload, nodes: list[NodeInfo] | None = None) -> str | None:
    """Why the gang can never run on this cluster's nodes, or None if it could some day.

    A flavor without any node yet is not refused: nodes may still be added (or come from a
    Ray cluster's inventory); once a flavor has nodes, a gang none of them can hold is.
    Cordoned nodes count as if they were back: they may be. `nodes`, the flavor's nodes
    from `flavor_nodes`, saves the query when many workloads are checked."""
    mine = flavor_nodes(s, w.flavor) if nodes is None else nodes
    if not mine:
        return None
    return None if can_ever_fit(mine, w) else reasons.never_fits(w)


def flavor_nodes(s: Session, flavor: str) -> list[NodeInfo]:
    return [
        NodeInfo(n.name, n.flavor, n.chips, n.zone, n.block, n.rack, True)
        for n in s.scalars(select(Node).where(Node.flavor == flavor))
    ]


@dataclass(frozen=True)
class QuotaRow:
    contract: str
    tenant: str
    flavor: str
    guaranteed_chips: int
    in_use_chips: int
    borrowed_chips: int
    borrow_limit_chips: int | None
    borrowable_now_chips: int
    committed_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    runs_out_at: datetime | None


def quota_rows(s: Session, tenant_ids: list[str], now: datetime) -> list[QuotaRow]:
    """Per contract in force and flavor: the guarantee, what runs, what is borrowed and may
    still be, and the commitment's burn (`runs_out_at`: when spent reaches committed, or when
    it is projected to at the current burn rate)."""
    state = cluster_state(s, now.timestamp())
    names = {q.tenant: q for q in state.quotas}
    capacity: dict[str, int] = {}
    for n in state.nodes:
        if n.schedulable:
            capacity[n.flavor] = capacity.get(n.flavor, 0) + n.chips
    used_all: dict[str, int] = {}
    used: dict[tuple[str, str], int] = {}
    for a in state.running:
        f, t = a.workload.flavor, a.workload.tenant
        used_all[f] = used_all.get(f, 0) + a.workload.chips
        used[(t, f)] = used.get((t, f), 0) + a.workload.chips
    contracts = s.scalars(
        select(Contract)
        .where(
            Contract.tenant_id.in_(tenant_ids),
            Contract.term_start <= now,
            Contract.term_end > now,
        )
        .order_by(Contract.name)
    ).all()
    rows = []
    for c in contracts:
        terms = contract_terms(c)
        status = contract_status(terms, iter_lines(s, select_lines(contract=c.name)), now)
        runs_out = status.reached_at or status.projected_reach_at
        quota = names.get(terms.tenant)
        spec = load_stored(ContractSpec, c.spec)
        flavors = sorted(set(spec.guaranteed_chips) | set(spec.borrow_limit_chips or {}))
        for f in flavors:
            guaranteed = quota.guaranteed_chips.get(f, 0) if quota else 0
            in_use = used.get((terms.tenant, f), 0)
            borrowed = max(0, in_use - guaranteed)
            limits = quota.borrow_limit_chips if quota else None
            limit = None if limits is None else limits.get(f, 0)
            free = max(0, capacity.get(f, 0) - used_all.get(f, 0))
            unused_guarantee = max(0, guaranteed - in_use)
            room = max(0, free - unused_guarantee)
            left = room if limit is None else min(room, max(0, limit - borrowed))
            rows.append(
                QuotaRow(
                    contract=c.name,
                    tenant=terms.tenant,
                    flavor=f,
                    guaranteed_chips=spec.guaranteed_chips.get(f, 0),
                    in_use_chips=in_use,
                    borrowed_chips=borrowed,
                    borrow_limit_chips=limit,
                    borrowable_now_chips=left,
                    committed_usd=terms.committed_usd,
                    spent_usd=status.spent_usd.quantize(MICRO),
                    remaining_usd=status.remaining_usd.quantize(MICRO),
                    runs_out_at=runs_out,
                )
            )
    return rows


def backdate_charge(s: Session, spec: ContractSpec, now: datetime) -> tuple[Decimal, str]:
    """What signing `spec` now bills for the part of its term already past: its guaranteed
    chips are reserved, and billed, for every hour of the term, at the contract's rate."""
    start, end = spec.term.start, min(spec.term.end, now)
    if end <= start:
        return Decimal(0), "nothing: the term has not begun"
    hours = Decimal((end - start).total_seconds()) / 3600
    book = load_price_book(s)
    total = Decimal(0)
    parts = []
    for flavor, chips in sorted(spec.guaranteed_chips.items()):
        if chips <= 0:
            continue
        try:
            listed = book.chip_price_at(flavor, now).usd_per_chip_hour
        except PriceNotFound:
            continue
        usd = listed * (1 - spec.discount) * chips * hours
        total += usd
        parts.append(f"{chips} {flavor} x {hours:.1f} h = {usd.quantize(CENT)} USD")
    detail = "; ".join(parts) or "no guaranteed chips, so no reservations"
    since = start.strftime("%Y-%m-%d %H:%M UTC")
    return total.quantize(CENT), (
        f"the term began {since}: reservations for the {hours:.1f} hours since are billed "
        f"at once ({detail}); total {total.quantize(CENT)} USD"
    )
