import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainier.metering import (
    ContractTerms,
    TaskInterval,
    charge_interval,
    default_price_book,
    next_slice,
)
from rainier.metering.periods import seconds

T0 = datetime(2026, 3, 1, 7, 13, 5, 250_000, tzinfo=UTC)
TERMS = ContractTerms(
    contract="c1",
    tenant="acme",
    start=datetime(2026, 1, 1, tzinfo=UTC),
    end=datetime(2027, 1, 1, tzinfo=UTC),
    committed_usd=Decimal(100_000),
    guaranteed_chips={"h200": 8},
    discount=Decimal("0.2"),
)
PRICES = default_price_book()
PRICES_FLAVORS = {p.flavor for p in PRICES.chip_prices}

micros = st.integers(min_value=0, max_value=3 * 24 * 3600 * 1_000_000)


def slices_of(
    start: datetime, end: datetime, ticks: list[datetime]
) -> list[tuple[datetime, datetime]]:
    billed_until = None
    out = []
    for now in [*sorted(ticks), end + timedelta(hours=1)]:
        span = next_slice(start, billed_until, now, ended_at=end)
        if span is not None:
            out.append(span)
            billed_until = span[1]
    return out


@settings(max_examples=200, deadline=None)
@given(duration=micros, ticks=st.lists(micros, max_size=30), chips=st.integers(1, 64))
def test_slices_conserve_chip_time_whatever_the_ticks(
    duration: int, ticks: list[int], chips: int
) -> None:
    end = T0 + timedelta(microseconds=duration)
    spans = slices_of(T0, end, [T0 + timedelta(microseconds=t) for t in ticks])
    if duration == 0:
        assert spans == []
        return
    assert spans[0][0] == T0 and spans[-1][1] == end
    for (_, a_end), (b_start, _) in itertools.pairwise(spans):
        assert a_end == b_start
    lines = [
        line
        for a, b in spans
        for line in charge_interval(
            TaskInterval("acme", "c1", "j1", "t0", "h200", chips, a, b), TERMS, PRICES
        )
    ]
    assert sum(line.quantity for line in lines) == seconds(end - T0) * chips
    ordered = sorted(lines, key=lambda line: line.period_start)
    for a, b in itertools.pairwise(ordered):
        assert a.period_end == b.period_start
    assert len({line.key for line in lines}) == len(lines)
    for line in lines:
        hour = line.period_start.replace(minute=0, second=0, microsecond=0)
        assert line.period_end <= hour + timedelta(hours=1)


def test_next_slice_is_empty_when_nothing_new() -> None:
    assert next_slice(T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=5)) is None
    assert next_slice(T0, None, T0 - timedelta(seconds=1)) is None
    ended = T0 + timedelta(minutes=1)
    assert next_slice(T0, ended, T0 + timedelta(hours=1), ended_at=ended) is None


def test_next_slice_refuses_billing_before_the_task_started() -> None:
    with pytest.raises(ValueError, match="before the task started"):
        next_slice(T0, T0 - timedelta(seconds=1), T0 + timedelta(seconds=1))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slice(datetime(2026, 1, 1), None, datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        TaskInterval("acme", "c1", "j", "t", "h200", 1, datetime(2026, 1, 1), T0)


def test_a_retried_slice_yields_the_same_lines() -> None:
    interval = TaskInterval("acme", "c1", "j1", "t0", "h200", 8, T0, T0 + timedelta(hours=2))
    first = charge_interval(interval, TERMS, PRICES)
    again = charge_interval(interval, TERMS, PRICES)
    assert first == again
    assert len(first) == 3


def test_equal_instants_in_other_zones_give_the_same_key() -> None:
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    a = TaskInterval("acme", "c1", "j1", "t0", "h200", 1, T0, T0 + timedelta(minutes=10))
    b = TaskInterval(
        "acme",
        "c1",
        "j1",
        "t0",
        "h200",
        1,
        T0.astimezone(paris),
        (T0 + timedelta(minutes=10)).astimezone(paris),
    )
    assert [x.key for x in charge_interval(a, TERMS, PRICES)] == [
        x.key for x in charge_interval(b, TERMS, PRICES)
    ]


def test_zero_chip_tasks_bill_nothing() -> None:
    interval = TaskInterval("acme", "c1", "j1", "t0", "cpu", 0, T0, T0 + timedelta(hours=2))
    assert charge_interval(interval, TERMS, PRICES) == []


@settings(max_examples=100, deadline=None)
@given(
    runs=st.lists(
        st.tuples(
            micros,
            st.integers(1, 10**9),
            st.integers(1, 64),
            st.sampled_from(sorted(PRICES_FLAVORS)),
        ),
        min_size=1,
        max_size=10,
    ),
    discount=st.decimals(min_value=0, max_value=Decimal("0.9"), places=3),
)
def test_amounts_are_micro_dollars_and_sums_do_not_depend_on_order(
    runs: list[tuple[int, int, int, str]], discount: Decimal
) -> None:
    terms = ContractTerms("c1", "acme", TERMS.start, TERMS.end, Decimal(0), {}, discount)
    lines = [
        line
        for n, (offset, length, chips, flavor) in enumerate(runs)
        for line in charge_interval(
            TaskInterval(
                "acme",
                "c1",
                "j",
                f"t{n}",
                flavor,
                chips,
                T0 + timedelta(microseconds=offset),
                T0 + timedelta(microseconds=offset + length),
            ),
            terms,
            PRICES,
        )
    ]
    for line in lines:
        assert line.amount_usd.as_tuple().exponent == -6
        exact = line.quantity * line.rate_usd / 3600
        assert abs(line.amount_usd - exact) <= Decimal("0.0000005")
    forward = sum((x.amount_usd for x in lines), Decimal(0))
    backward = sum((x.amount_usd for x in reversed(lines)), Decimal(0))
    halves = sum((x.amount_usd for x in lines[::2]), Decimal(0)) + sum(
        (x.amount_usd for x in lines[1::2]), Decimal(0)
    )
    assert forward == backward == halves
    assert forward.as_tuple().exponent == -6
