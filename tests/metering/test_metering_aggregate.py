import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from rainier.metering import (
    FOCUS_COLUMNS,
    ContractTerms,
    TaskInterval,
    TokenUsage,
    UsageLine,
    charge_interval,
    charge_tokens,
    contract_status,
    correction,
    default_price_book,
    focus_rows,
    monthly_statement,
    settle_reservation,
    true_up,
    usage_by,
    write_focus_csv,
    write_lines_csv,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = default_price_book().with_token_price("llama", Decimal("0.3"), Decimal("0.9"), START)
TERMS = ContractTerms(
    contract="c1",
    tenant="acme",
    start=START,
    end=datetime(2027, 1, 1, tzinfo=UTC),
    committed_usd=Decimal(50_000),
    guaranteed_chips={"h200": 2},
    discount=Decimal("0.1"),
)


def run(job: str, flavor: str, chips: int, start: datetime, hours: float) -> list[UsageLine]:
    interval = TaskInterval(
        "acme", "c1", job, f"{job}-0", flavor, chips, start, start + timedelta(hours=hours)
    )
    return charge_interval(interval, TERMS, PRICES)


def ledger() -> list[UsageLine]:
    lines = run("train", "h200", 8, datetime(2026, 1, 30, 22, tzinfo=UTC), 5)
    lines += run("eval", "trn2", 4, datetime(2026, 2, 3, 9, 30, tzinfo=UTC), 2)
    lines += charge_tokens(
        TokenUsage(
            "acme",
            "c1",
            "chat",
            "r1",
            "llama",
            2_000_000,
            1_000_000,
            datetime(2026, 2, 4, tzinfo=UTC),
        ),
        TERMS,
        PRICES,
    )
    reserved = settle_reservation(
        TERMS,
        "h200",
        (datetime(2026, 2, 5, tzinfo=UTC), datetime(2026, 2, 5, 1, tzinfo=UTC)),
        PRICES,
        Decimal(0),
    )
    assert reserved is not None
    return [
        *lines,
        reserved,
        correction(lines[0], quantity=-lines[0].quantity, reason="lost", revision=0),
    ]


def test_statement_totals_equal_the_sum_of_the_months_lines() -> None:
    lines = ledger()
    feb = monthly_statement(TERMS, lines, 2026, 2)
    in_feb = [
        x
        for x in lines
        if datetime(2026, 2, 1, tzinfo=UTC) <= x.period_start < datetime(2026, 3, 1, tzinfo=UTC)
    ]
    assert feb.line_count == len(in_feb) > 0
    assert feb.total_usd == sum(x.amount_usd for x in in_feb)
    assert sum(g.amount_usd for g in feb.groups) == feb.total_usd
    assert feb.invoice_total_usd == feb.total_usd.quantize(Decimal("0.01"))
    jan = monthly_statement(TERMS, lines, 2026, 1)
    assert feb.drawn_before_usd == jan.drawn_in_period_usd
    assert feb.remaining_usd == TERMS.committed_usd - jan.total_usd - feb.total_usd
    kinds = {(g.kind, g.sku) for g in feb.groups}
    assert ("input_tokens", "llama") in kinds and ("reserved_chip_seconds", "h200") in kinds


@settings(max_examples=40, deadline=None)
@given(
    runs=st.lists(
        st.tuples(st.integers(0, 60 * 24 * 70), st.integers(1, 60 * 30), st.integers(1, 16)),
        min_size=1,
        max_size=8,
    )
)
def test_statements_partition_the_ledger(runs: list[tuple[int, int, int]]) -> None:
    lines = [
        line
        for n, (offset, minutes, chips) in enumerate(runs)
        for line in run(f"j{n}", "gb200", chips, START + timedelta(minutes=offset), minutes / 60)
    ]
    months = [monthly_statement(TERMS, lines, 2026, m) for m in (1, 2, 3, 4)]
    assert sum(s.total_usd for s in months) == sum(x.amount_usd for x in lines)
    assert sum(s.line_count for s in months) == len(lines)
    assert months[-1].remaining_usd == TERMS.committed_usd - sum(x.amount_usd for x in lines)


def test_usage_by_flavor_job_and_day() -> None:
    lines = ledger()
    by_flavor = usage_by(lines, "flavor")
    chips = {g for g in by_flavor if not g[0].startswith("(")}
    assert chips == {("h200", "chip_second"), ("trn2", "chip_second")}
    assert by_flavor[("(tokens)", "token")].quantity == 3_000_000
    assert by_flavor[("trn2", "chip_second")].quantity == 4 * 2 * 3600
    by_job = usage_by(lines, "job")
    assert by_job[("chat", "token")].quantity == 3_000_000
    assert not any(group == "c1" for group, _ in by_job)
    assert by_job[("train", "chip_second")].quantity == 8 * 5 * 3600 - lines[0].quantity
    by_day = usage_by(lines, "day")
    assert by_day[("2026-01-30", "chip_second")].quantity == 8 * 2 * 3600 - lines[0].quantity
    assert by_day[("2026-01-31", "chip_second")].quantity == 8 * 3 * 3600
    assert sum(t.amount_usd for t in by_day.values()) == sum(x.amount_usd for x in lines)
    assert usage_by(lines, "model")[("llama", "token")].quantity == 3_000_000
    everything = sum(x.amount_usd for x in lines)
    for by in ("flavor", "job", "model", "kind"):  # every view sums to the total
        assert sum(t.amount_usd for t in usage_by(lines, by).values()) == everything, by  # type: ignore[arg-type]


def test_status_projects_the_burn_rate_to_the_term_end() -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    daily = [
        line for d in range(60) for line in run(f"d{d}", "h200", 10, START + timedelta(days=d), 10)
    ]
    per_day = Decimal("4.50") * Decimal("0.9") * 100
    status = contract_status(TERMS, daily, at, window=timedelta(days=30))
    assert status.spent_usd == per_day * 60
    assert status.burn_usd_per_day == per_day
    days_left = Decimal((TERMS.end - at).days)
    assert status.projected_spend_at_end_usd == per_day * 60 + per_day * days_left
    assert status.projected_shortfall_usd == max(
        Decimal(0), TERMS.committed_usd - status.projected_spend_at_end_usd
    )
    assert status.projected_reach_at is not None
    assert abs(
        status.projected_reach_at
        - (at + timedelta(days=float((TERMS.committed_usd - status.spent_usd) / per_day)))
    ) < timedelta(seconds=1)
    assert status.reached_at is None


def test_status_knows_when_the_commitment_was_reached() -> None:
    small = ContractTerms("c1", "acme", START, TERMS.end, Decimal(1000), {}, Decimal(0))
    lines = [
        line
        for d in range(10)
        for line in charge_interval(
            TaskInterval(
                "acme",
                "c1",
                "j",
                f"t{d}",
                "h200",
                10,
                START + timedelta(days=d),
                START + timedelta(days=d, hours=5),
            ),
            small,
            PRICES,
        )
    ]
    status = contract_status(small, lines, datetime(2026, 2, 1, tzinfo=UTC))
    assert status.spent_usd == 10 * 5 * 10 * Decimal("4.50")
    assert status.reached_at == START + timedelta(days=4, hours=3)
    assert status.projected_reach_at is None and status.projected_shortfall_usd == 0
    assert status.remaining_usd < 0


def test_focus_rows_carry_the_columns_and_the_money() -> None:
    lines = ledger()
    end = TERMS.end
    up = true_up(TERMS, lines, end, PRICES)
    assert up is not None
    rows = focus_rows([*lines, up])
    required = {
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "BillingPeriodStart",
        "BillingPeriodEnd",
        "ChargeCategory",
        "ChargeDescription",
        "ConsumedQuantity",
        "ConsumedUnit",
        "PricingQuantity",
        "PricingUnit",
        "ResourceId",
        "ServiceName",
        "SubAccountId",
        "BillingCurrency",
        "ChargeClass",
        "ChargeFrequency",
        "ProviderName",
        "BillingAccountId",
    }
    assert required <= set(FOCUS_COLUMNS)
    assert all(set(row) == set(FOCUS_COLUMNS) for row in rows)
    assert sum(Decimal(r["BilledCost"]) for r in rows) == sum(x.amount_usd for x in [*lines, up])
    first = rows[0]
    assert first["ChargeCategory"] == "Usage" and first["ConsumedUnit"] == "Chip-Seconds"
    assert first["PricingUnit"] == "Chip-Hours" and first["ResourceId"] == "train"
    assert Decimal(first["ListCost"]) > Decimal(first["ContractedCost"])
    assert first["ChargePeriodStart"] == "2026-01-30T22:00:00Z"
    assert first["BillingPeriodStart"] == "2026-01-01T00:00:00Z"
    assert rows[-1]["ChargeCategory"] == "Adjustment" and rows[-1]["ConsumedQuantity"] == ""
    assert rows[-2]["ChargeClass"] == "Correction"
    reserved = next(r for r in rows if r["x_LineKind"] == "reserved_chip_seconds")
    assert reserved["CommitmentDiscountStatus"] == "Unused"


def test_csv_writers_take_a_text_stream() -> None:
    lines = ledger()
    focus = io.StringIO()
    assert write_focus_csv(lines, focus) == len(lines)
    parsed = list(csv.DictReader(io.StringIO(focus.getvalue())))
    assert len(parsed) == len(lines) and tuple(parsed[0]) == FOCUS_COLUMNS
    raw = io.StringIO()
    write_lines_csv(lines, raw)
    back = list(csv.DictReader(io.StringIO(raw.getvalue())))
    assert [Decimal(r["amount_usd"]) for r in back] == [x.amount_usd for x in lines]
    assert [r["key"] for r in back] == [x.key for x in lines]


def test_statement_shows_how_the_guarantee_covered_usage() -> None:
    h1 = datetime(2026, 3, 2, 10, tzinfo=UTC)
    h2 = h1 + timedelta(hours=1)
    h3 = h2 + timedelta(hours=1)
    lines = run("big", "h200", 3, h1, 1) + run("small", "h200", 1, h2, 1)
    lines += run("late", "h200", 1, h3, 1)
    for a, b in ((h1, h2), (h2, h3)):
        used = sum(x.quantity for x in lines if a <= x.period_start < b)
        reserved = settle_reservation(TERMS, "h200", (a, b), PRICES, used)
        assert reserved is not None
        lines.append(reserved)
    (cov,) = monthly_statement(TERMS, lines, 2026, 3).coverage
    assert cov.flavor == "h200"
    assert cov.reserved_chip_s == 2 * 2 * 3600
    assert cov.used_chip_s == 5 * 3600
    assert cov.unused_chip_s == 3600
    assert cov.within_guarantee_chip_s == 3 * 3600
    assert cov.beyond_guarantee_chip_s == 2 * 3600
