"""Metering against the store directly: idempotent inserts, bulk ingest, tokens from the
gateway's table, reservation settlement and the true-up, and SQL sums equal to the pure ones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from rainier.accounting.bulk_load import ingest_lines
from rainier.accounting.contract_lookup import contract_terms, record_tokens
from rainier.accounting.ledger_rows import (
    LINE_FIELDS,
    drawn_usd,
    insert_lines,
    iter_lines,
    row_line,
    select_lines,
)
from rainier.accounting.meter import Metering
from rainier.metering import (
    ContractTerms,
    TaskInterval,
    TokenUsage,
    charge_interval,
    committed_spend,
    correction,
    default_price_book,
)
from rainier.metering.synthetic import synthetic_contracts, synthetic_lines
from rainier.store.db import Store
from rainier.store.tables import (
    Contract,
    PricePoint,
    Tenant,
    TokenUsageRecord,
    UsageLineRow,
    new_id,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(database_url)
    s.migrate()
    yield s
    s.dispose()


def all_lines(store: Store) -> list:
    with store.read() as s:
        rows = s.execute(select(*(UsageLineRow.__table__.c[n] for n in LINE_FIELDS))).all()
    return sorted((row_line(r) for r in rows), key=lambda line: line.key)


def add_contract(store: Store, tenant: str, name: str, **spec: object) -> ContractTerms:
    body = {
        "kind": "Contract",
        "name": name,
        "tenant": tenant,
        "term": {"start": T0.isoformat(), "end": (T0 + timedelta(hours=3)).isoformat()},
        "committed_usd": "50.00",
        "guaranteed_chips": {"h200": 2},
        "discount": "0.25",
        **spec,
    }
    with store.write() as s:
        row = s.scalars(select(Tenant).where(Tenant.name == tenant)).one_or_none()
        if row is None:
            row = Tenant(id=new_id("ten"), name=tenant)
            s.add(row)
            s.flush()
        s.add(
            Contract(
                id=new_id("ctr"),
                name=name,
                tenant_id=row.id,
                term_start=T0,
                term_end=T0 + timedelta(hours=3),
                committed_usd=Decimal("50"),
                spec=body,
            )
        )
    with store.read() as s:
        return contract_terms(s.scalars(select(Contract).where(Contract.name == name)).one())


def test_lines_round_trip_exactly_and_inserts_are_idempotent(store: Store) -> None:
    contracts = synthetic_contracts(3, start=T0, hours=5)
    lines = list(synthetic_lines(contracts, hours=5))
    with store.write() as s:
        insert_lines(s, lines)
    with store.write() as s:
        insert_lines(s, lines[:4])
    assert ingest_lines(store, lines, batch=4) == len(lines)
    assert all_lines(store) == sorted(lines, key=lambda line: line.key)
    with store.read() as s:
        for terms in contracts:
            assert drawn_usd(s, terms) == committed_spend(terms, lines)


def test_lines_are_found_by_contract_alone_and_by_tenant(store: Store) -> None:
    """The one index leads with the tenant: a query by contract alone finds the tenant from the
    contract's row, and neither way picks up another tenant's lines."""
    a = add_contract(store, "acme", "acme-2026")
    b = add_contract(store, "bolt", "bolt-2026")
    lines = [
        line
        for terms in (a, b)
        for h in range(3)
        for line in charge_interval(
            TaskInterval(
                tenant=terms.tenant,
                contract=terms.contract,
                job_id="j1",
                task_id="t0",
                flavor="h200",
                chips=2,
                start=T0 + timedelta(hours=h),
                end=T0 + timedelta(hours=h + 1),
            ),
            terms,
            default_price_book(),
        )
    ]
    ingest_lines(store, lines)
    with store.read() as s:
        for terms in (a, b):
            mine = sorted(
                (line for line in lines if line.contract == terms.contract),
                key=lambda line: (line.period_start, line.key),
            )
            assert list(iter_lines(s, select_lines(contract=terms.contract))) == mine
            assert list(iter_lines(s, select_lines(tenant=terms.tenant))) == mine
            since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
            assert list(
                iter_lines(s, select_lines(contract=terms.contract, since=since, until=until))
            ) == [line for line in mine if since <= line.period_start < until]
        assert list(iter_lines(s, select_lines(contract="nobody's"))) == []


def test_bulk_ingest_stores_corrections_and_skips_what_is_stored(store: Store) -> None:
    contracts = synthetic_contracts(2, start=T0, hours=3)
    lines = list(synthetic_lines(contracts, hours=3))
    fixes = [
        correction(lines[0], quantity=Decimal(-60), reason="node lost", revision=0),
        correction(lines[1], quantity=Decimal("1.5"), reason="late record", revision=0),
    ]
    mixed = lines[:3] + fixes[:1] + lines[3:] + fixes[1:]
    assert ingest_lines(store, mixed) == len(mixed)
    assert ingest_lines(store, mixed + mixed[:2]) == len(mixed) + 2
    assert all_lines(store) == sorted(mixed, key=lambda line: line.key)
    stored = {line.key: line for line in all_lines(store)}
    assert stored[fixes[0].key].corrects == lines[0].key
    assert stored[fixes[0].key].corrects_kind == "chip_seconds"
    assert stored[lines[0].key].corrects is None


def test_bulk_ingest_stores_the_values_the_orm_stores(store: Store) -> None:
    """Byte for byte in the database, rates spelled with trailing zeros or an exponent too."""
    base = list(synthetic_lines(synthetic_contracts(2, start=T0, hours=2), hours=2))
    spelled = [
        replace(base[0], rate_usd=Decimal("2.9250"), list_rate_usd=Decimal("1E+1")),
        replace(base[1], rate_usd=Decimal("4.5"), list_rate_usd=Decimal("4.50")),
        replace(base[2], rate_usd=Decimal("1E-7"), quantity=Decimal("3600.000000")),
        correction(base[3], quantity=Decimal("-0.5"), reason="clock skew", revision=0),
    ]
    by_orm = [replace(line, key=line.key[::-1]) for line in spelled]
    with store.write() as s:
        insert_lines(s, by_orm)
    assert ingest_lines(store, spelled) == len(spelled)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT {', '.join(LINE_FIELDS)} FROM usage_lines").all()
    stored = {row[0]: tuple(row[1:]) for row in rows}
    for bulk, orm in zip(spelled, by_orm, strict=True):
        assert stored[bulk.key] == stored[orm.key]


def test_bulk_ingest_writes_nothing_when_a_line_cannot_be_stored(store: Store) -> None:
    lines = list(synthetic_lines(synthetic_contracts(2, start=T0, hours=4), hours=4))
    inexact = replace(lines[5], amount_usd=Decimal("1.0000001"))
    with pytest.raises(ValueError, match="more than 6 decimal places"):
        ingest_lines(store, [*lines[:5], inexact, *lines[6:]])
    assert all_lines(store) == []
    with pytest.raises(ValueError, match="more than 6 decimal places"):
        ingest_lines(store, [*lines[:5], inexact, *lines[6:]], batch=3)
    assert all_lines(store) == sorted(lines[:3], key=lambda line: line.key)


def test_tokens_from_the_gateway_table_are_priced_once(store: Store) -> None:
    terms = add_contract(store, "openai", "openai-tok")
    with store.write() as s:
        s.add(PricePoint(version=2, kind="token", sku="*", effective_from=T0, usd=2, output_usd=6))
        tenant_id = s.scalars(select(Tenant.id).where(Tenant.name == "openai")).one()
        for n in range(3):
            s.add(
                TokenUsageRecord(
                    request_id=f"req-{n}",
                    tenant_id=tenant_id,
                    deployment_id="dep-1",
                    deployment="chat",
                    model="llama",
                    input_tokens=1000,
                    output_tokens=500 * n,
                    at=T0 + timedelta(minutes=n),
                )
            )
    metering = Metering(store)
    metering.tick(T0 + timedelta(hours=1))
    metering.tick(T0 + timedelta(hours=1))
    lines = [line for line in all_lines(store) if line.kind.endswith("tokens")]
    assert len(lines) == 5
    inputs = [line for line in lines if line.kind == "input_tokens"]
    assert sum(line.quantity for line in inputs) == 3000
    assert {line.rate_usd for line in inputs} == {Decimal("1.5")}
    outputs = sum(line.amount_usd for line in lines if line.kind == "output_tokens")
    assert outputs == Decimal(1500) * Decimal("4.5") / 1_000_000
    assert {line.contract for line in lines} == {terms.contract}
    with store.write() as s:
        direct = TokenUsage("openai", "", "chat", "req-direct", "llama", 10, 0, T0)
        assert record_tokens(s, direct) == [terms.contract]
        record_tokens(s, direct)
    assert len([line for line in all_lines(store) if line.source == "request:req-direct"]) == 1


def test_reservations_settle_and_the_term_is_trued_up(store: Store) -> None:
    terms = add_contract(store, "acme", "acme-res")
    prices = default_price_book()
    used = TaskInterval(
        "acme", terms.contract, "job-1", "t-1", "h200", 1, T0, T0 + timedelta(minutes=90)
    )
    beyond = TaskInterval(
        "acme", terms.contract, "job-2", "t-2", "h200", 3, T0, T0 + timedelta(minutes=30)
    )
    usage = charge_interval(used, terms, prices) + charge_interval(beyond, terms, prices)
    with store.write() as s:
        insert_lines(s, usage)
    metering = Metering(store, settle_delay_s=0)
    metering.tick(T0 + timedelta(minutes=150))
    reserved = sorted(
        (line for line in all_lines(store) if line.kind == "reserved_chip_seconds"),
        key=lambda line: line.period_start,
    )
    assert [line.quantity for line in reserved] == [Decimal(0), Decimal(2 * 3600 - 1800)]
    metering.tick(T0 + timedelta(hours=4))
    metering.tick(T0 + timedelta(hours=5))
    lines = all_lines(store)
    reserved = sorted(
        (line for line in lines if line.kind == "reserved_chip_seconds"),
        key=lambda line: line.period_start,
    )
    assert [line.quantity for line in reserved] == [0, 2 * 3600 - 1800, 2 * 3600]
    (trued,) = [line for line in lines if line.kind == "true_up"]
    spent = committed_spend(terms, lines)
    assert trued.amount_usd == Decimal(50) - spent > 0
    assert len(lines) == len({line.key for line in lines})
