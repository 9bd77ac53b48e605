import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainier.metering import (
    ContractTerms,
    TaskInterval,
    UsageLine,
    budget_alerts,
    charge_interval,
    commitment_alerts,
    committed_spend,
    crossed_thresholds,
    default_price_book,
    monthly_spend,
)
from rainier.metering.webhook import body, retry_delay_s, retry_delays_s, sign, verify

START = datetime(2026, 1, 1, tzinfo=UTC)
TERMS = ContractTerms(
    "c1", "acme", START, datetime(2027, 1, 1, tzinfo=UTC), Decimal(900), {}, Decimal(0)
)
PRICES = default_price_book()


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.decimals(min_value=0, max_value=400, places=6), max_size=20))
def test_each_threshold_fires_once_as_spend_grows(steps: list[Decimal]) -> None:
    spent = Decimal(0)
    fired: list[int] = []
    for step in steps:
        events = crossed_thresholds(
            tenant="acme",
            contract="c1",
            scope="commitment",
            period="term",
            limit_usd=Decimal(1000),
            spent_before_usd=spent,
            spent_after_usd=spent + step,
            at=START,
        )
        spent += step
        fired += [e.threshold_pct for e in events]
    assert fired == sorted(fired)
    assert fired == [t for t in (50, 80, 100) if spent >= Decimal(10) * t]


def test_commitment_alerts_from_new_lines() -> None:
    hours = [
        charge_interval(
            TaskInterval(
                "acme",
                "c1",
                "j",
                "t",
                "h200",
                10,
                START + timedelta(hours=h),
                START + timedelta(hours=h + 1),
            ),
            TERMS,
            PRICES,
        )
        for h in range(25)
    ]
    ledger: list[UsageLine] = []
    seen = []
    for batch in hours:
        seen += commitment_alerts(TERMS, committed_spend(TERMS, ledger), batch, START)
        ledger += batch
    assert [e.threshold_pct for e in seen] == [50, 80, 100]
    assert seen[0].spent_usd == Decimal(45) * 10
    assert len({e.key for e in seen}) == 3
    again = crossed_thresholds(
        tenant="acme",
        contract="c1",
        scope="commitment",
        period=seen[0].period,
        limit_usd=Decimal(900),
        spent_before_usd=Decimal(0),
        spent_after_usd=Decimal(900),
        at=START,
    )
    assert [e.key for e in again] == [e.key for e in seen]


def test_budget_alerts_are_per_month() -> None:
    jan = charge_interval(
        TaskInterval(
            "acme",
            "c1",
            "j",
            "t",
            "h200",
            1,
            datetime(2026, 1, 31, 20, tzinfo=UTC),
            datetime(2026, 2, 1, 4, tzinfo=UTC),
        ),
        TERMS,
        PRICES,
    )
    events = budget_alerts(TERMS, Decimal(30), {}, jan, START)
    assert [(e.period, e.threshold_pct) for e in events] == [("2026-01", 50), ("2026-02", 50)]
    assert monthly_spend(TERMS, jan) == {"2026-01": Decimal(18), "2026-02": Decimal(18)}
    feb = charge_interval(
        TaskInterval(
            "acme",
            "c1",
            "j",
            "t",
            "h200",
            1,
            datetime(2026, 2, 1, 4, tzinfo=UTC),
            datetime(2026, 2, 1, 7, tzinfo=UTC),
        ),
        TERMS,
        PRICES,
    )
    later = budget_alerts(TERMS, Decimal(30), monthly_spend(TERMS, jan), feb, START)
    assert [(e.period, e.threshold_pct) for e in later] == [("2026-02", 80), ("2026-02", 100)]
    assert budget_alerts(TERMS, Decimal(30), monthly_spend(TERMS, jan + feb), [], START) == []


def test_webhook_signature_verifies_and_detects_tampering() -> None:
    event = crossed_thresholds(
        tenant="acme",
        contract="c1",
        scope="budget",
        period="2026-01",
        limit_usd=Decimal(10),
        spent_before_usd=Decimal(0),
        spent_after_usd=Decimal(6),
        at=START,
    )[0]
    payload = body(event.payload())
    assert json.loads(payload)["threshold_pct"] == 50
    header = sign(b"s3cret", payload, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(b"s3cret", payload, header, now_s=1_700_000_100)
    assert not verify(b"other", payload, header, now_s=1_700_000_100)
    assert not verify(b"s3cret", payload.replace(b"50", b"51"), header, now_s=1_700_000_100)
    assert not verify(b"s3cret", payload, header, now_s=1_700_001_000)
    assert not verify(b"s3cret", payload, "garbage", now_s=1_700_000_000)
    assert not verify(
        b"s3cret", payload, header.replace("t=1700000000", "t=1700000001"), now_s=1_700_000_000
    )


def test_retry_schedule_backs_off_to_a_cap() -> None:
    delays = retry_delays_s(max_attempts=12, base_s=5, factor=2, cap_s=600)
    assert delays[:4] == [5, 10, 20, 40]
    assert delays == sorted(delays) and max(delays) == 600 and delays[-1] == 600
    assert retry_delay_s(3, base_s=5, jitter=0.5) == 15
    with pytest.raises(ValueError):
        retry_delay_s(0)
    with pytest.raises(ValueError):
        retry_delay_s(1, jitter=1.0)
