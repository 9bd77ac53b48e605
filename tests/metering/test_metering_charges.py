import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainier.catalog import FLAVORS
from rainier.metering import (
    ContractTerms,
    PriceNotFound,
    TaskInterval,
    TokenUsage,
    UsageLine,
    charge_interval,
    charge_tokens,
    committed_spend,
    correction,
    default_price_book,
    hourly_reserved_usd,
    idempotency_key,
    reservation_periods,
    settle_reservation,
    true_up,
    used_chip_seconds,
)
from rainier.metering.ledger import price
from rainier.spec_yaml import parse_yaml

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)
PRICES = default_price_book()


def terms(**overrides: object) -> ContractTerms:
    fields: dict[str, object] = {
        "contract": "c1",
        "tenant": "acme",
        "start": START,
        "end": END,
        "committed_usd": Decimal(10_000),
        "guaranteed_chips": {"h200": 8},
        "discount": Decimal("0.2"),
    }
    fields.update(overrides)
    return ContractTerms(**fields)  # type: ignore[arg-type]


def task(
    chips: int, start: datetime, end: datetime, flavor: str = "h200", n: int = 0
) -> TaskInterval:
    return TaskInterval("acme", "c1", f"job-{n}", f"task-{n}", flavor, chips, start, end)


def test_usage_is_billed_at_list_minus_discount() -> None:
    t = terms(discount=Decimal("0.25"))
    lines = charge_interval(task(4, START, START + timedelta(minutes=90)), t, PRICES)
    list_rate = FLAVORS["h200"].list_usd_per_chip_hour
    assert sum(x.amount_usd for x in lines) == list_rate * Decimal("0.75") * 4 * Decimal("1.5")
    assert sum(x.list_amount_usd for x in lines) == list_rate * 4 * Decimal("1.5")
    assert {x.rate_usd for x in lines} == {list_rate * Decimal("0.75")}
    assert all(x.amount_usd == price(x.quantity, x.rate_usd, x.pricing_unit) for x in lines)


def test_terms_come_from_a_contract_document() -> None:
    (spec,) = parse_yaml(
        "kind: Contract\nname: acme-2026\ntenant: acme\n"
        "term: {start: 2026-01-01, end: 2027-01-01}\ncommitted_usd: 1000\n"
        "guaranteed_chips: {h200: 64, trn2: 0}\ndiscount: 0.2\n"
    )
    t = ContractTerms.from_spec(spec, contract="ct-1")  # type: ignore[arg-type]
    assert (t.contract, t.tenant, t.committed_usd, t.discount) == (
        "ct-1",
        "acme",
        Decimal(1000),
        Decimal("0.2"),
    )
    assert dict(t.guaranteed_chips) == {"h200": 64}
    assert t.start == datetime(2026, 1, 1, tzinfo=UTC)


def test_price_change_mid_slice_splits_the_line_at_the_effective_date() -> None:
    change = START + timedelta(minutes=20)
    book = PRICES.with_chip_price("h200", Decimal("6.00"), change)
    assert book.version == PRICES.version + 1
    lines = charge_interval(
        task(2, START + timedelta(minutes=10), START + timedelta(minutes=40)), terms(), book
    )
    assert [(x.period_start, x.period_end) for x in lines] == [
        (START + timedelta(minutes=10), change),
        (change, START + timedelta(minutes=40)),
    ]
    assert [x.list_rate_usd for x in lines] == [Decimal("4.50"), Decimal("6.00")]
    assert lines[1].amount_usd == Decimal("6.00") * Decimal("0.8") * 2 * 20 / 60
    assert {x.price_book_version for x in lines} == {book.version}


def test_price_resolution_uses_the_latest_effective_price() -> None:
    book = PRICES.with_chip_price("gb200", Decimal("8"), START).with_chip_price(
        "gb200", Decimal("9"), END
    )
    assert book.chip_price_at("gb200", START - timedelta(seconds=1)).usd_per_chip_hour == Decimal(
        "7.00"
    )
    assert book.chip_price_at("gb200", START).usd_per_chip_hour == Decimal(8)
    assert book.chip_price_at("gb200", END + timedelta(days=9)).usd_per_chip_hour == Decimal(9)
    late = type(PRICES)(version=1, chip_prices=book.chip_prices[-1:])
    with pytest.raises(PriceNotFound):
        late.chip_price_at("gb200", START)


def test_tokens_are_priced_per_million_with_the_model_or_the_fallback() -> None:
    book = PRICES.with_token_price("llama-8b", Decimal("0.20"), Decimal("0.60"), START)
    usage = TokenUsage(
        "acme", "c1", "dep-1", "req-1", "llama-8b", 1500, 500, START + timedelta(hours=3)
    )
    inp, out = charge_tokens(usage, terms(), book)
    assert (inp.kind, inp.quantity, inp.amount_usd) == (
        "input_tokens",
        1500,
        Decimal("0.20") * Decimal("0.8") * 1500 / 1_000_000,
    )
    assert out.amount_usd == Decimal("0.60") * Decimal("0.8") * 500 / 1_000_000
    assert inp.key != out.key and inp.resource == "dep-1"
    other = TokenUsage("acme", "c1", "dep-1", "req-2", "mystery", 10, 0, START)
    (free,) = charge_tokens(other, terms(), book)
    assert free.amount_usd == 0 and free.quantity == 10


def test_usage_of_another_contract_is_refused() -> None:
    stray = TaskInterval("acme", "c2", "j", "t", "h200", 1, START, START + timedelta(hours=1))
    with pytest.raises(ValueError, match="terms of acme/c1"):
        charge_interval(stray, terms(), PRICES)


def test_usage_outside_the_term_is_at_list_price_and_draws_nothing_down() -> None:
    t = terms()
    lines = charge_interval(
        task(1, END - timedelta(minutes=30), END + timedelta(minutes=30)), t, PRICES
    )
    inside, outside = lines
    assert inside.rate_usd == Decimal("4.50") * Decimal("0.8")
    assert outside.rate_usd == Decimal("4.50")
    assert committed_spend(t, lines) == inside.amount_usd


def test_an_idle_reservation_is_charged_every_hour_at_the_contract_rate() -> None:
    t = terms()
    periods = reservation_periods(t, "h200", PRICES, START, START + timedelta(hours=5, minutes=30))
    assert len(periods) == 5
    lines = [settle_reservation(t, "h200", p, PRICES, Decimal(0)) for p in periods]
    hourly = Decimal("4.50") * Decimal("0.8") * 8
    assert hourly_reserved_usd(t, "h200", PRICES, START) == hourly
    assert [x.amount_usd for x in lines if x is not None] == [hourly] * 5
    assert reservation_periods(t, "trn2", PRICES, START, END) == []


@settings(max_examples=60, deadline=None)
@given(
    tasks=st.lists(
        st.tuples(st.integers(1, 16), st.integers(0, 3599), st.integers(1, 3600)), max_size=6
    )
)
def test_an_hour_costs_max_of_used_and_reserved(tasks: list[tuple[int, int, int]]) -> None:
    t = terms(discount=Decimal("0.2"))
    hour = (START, START + timedelta(hours=1))
    lines: list[UsageLine] = []
    for n, (chips, offset, length) in enumerate(tasks):
        a = START + timedelta(seconds=offset)
        b = min(a + timedelta(seconds=length), hour[1])
        lines += charge_interval(task(chips, a, b, n=n), t, PRICES)
    used = used_chip_seconds(lines, "c1", "h200", *hour)
    assert used == sum(x.quantity for x in lines)
    reserved = settle_reservation(t, "h200", hour, PRICES, used)
    total = sum(x.amount_usd for x in lines) + (reserved.amount_usd if reserved else 0)
    expected = max(used, Decimal(8 * 3600)) * Decimal("4.50") * Decimal("0.8") / 3600
    assert abs(total - expected) <= Decimal("0.000001") * (len(lines) + 1)


def test_late_usage_corrects_the_reservation_once() -> None:
    t = terms()
    hour = (START, START + timedelta(hours=1))
    first = settle_reservation(t, "h200", hour, PRICES, Decimal(3600))
    assert first is not None and first.quantity == 7 * 3600
    assert settle_reservation(t, "h200", hour, PRICES, Decimal(3600)) == first
    assert settle_reservation(t, "h200", hour, PRICES, Decimal(3600), prior=[first]) is None
    fix = settle_reservation(t, "h200", hour, PRICES, Decimal(3 * 3600), prior=[first])
    assert fix is not None and fix.kind == "correction" and fix.corrects == first.key
    assert fix.quantity == -2 * 3600 and fix.amount_usd < 0
    retry = settle_reservation(t, "h200", hour, PRICES, Decimal(3 * 3600), prior=[first])
    assert retry == fix
    assert (
        settle_reservation(t, "h200", hour, PRICES, Decimal(3 * 3600), prior=[first, fix]) is None
    )
    back = settle_reservation(t, "h200", hour, PRICES, Decimal(3600), prior=[first, fix])
    assert back is not None and back.key not in {first.key, fix.key} and back.quantity == 2 * 3600
    assert first.quantity + fix.quantity + back.quantity == first.quantity


def test_true_up_bills_the_unspent_commitment_after_the_term() -> None:
    t = terms(committed_usd=Decimal(1000))
    lines = charge_interval(task(10, START, START + timedelta(hours=10)), t, PRICES)
    spent = sum(x.amount_usd for x in lines)
    with pytest.raises(ValueError, match="term ends"):
        true_up(t, lines, END - timedelta(seconds=1), PRICES)
    line = true_up(t, lines, END, PRICES)
    assert line is not None and line.kind == "true_up"
    assert line.amount_usd == Decimal(1000) - spent
    assert line == true_up(t, lines, END + timedelta(days=3), PRICES)
    assert committed_spend(t, [*lines, line]) == spent
    rich = charge_interval(task(64, START, START + timedelta(days=10)), t, PRICES)
    assert true_up(t, rich, END, PRICES) is None


@settings(max_examples=200, deadline=None)
@given(
    a=st.tuples(
        st.sampled_from(["task:j/1", "task:j/2", "request:r"]),
        st.integers(0, 5),
        st.integers(0, 5),
        st.sampled_from(["chip_seconds", "input_tokens", "true_up"]),
    ),
    b=st.tuples(
        st.sampled_from(["task:j/1", "task:j/2", "request:r"]),
        st.integers(0, 5),
        st.integers(0, 5),
        st.sampled_from(["chip_seconds", "input_tokens", "true_up"]),
    ),
)
def test_keys_are_equal_exactly_when_source_period_and_kind_are(
    a: tuple[str, int, int, str], b: tuple[str, int, int, str]
) -> None:
    def key(x: tuple[str, int, int, str]) -> str:
        source, s, d, kind = x
        start = START + timedelta(minutes=s)
        return idempotency_key("c1", source, kind, start, start + timedelta(minutes=d))  # type: ignore[arg-type]

    assert (key(a) == key(b)) == (a == b)
    assert key(a) == key(a)


def test_keys_lead_with_the_period_start_so_later_usage_sorts_later() -> None:
    def key(start: datetime) -> str:
        return idempotency_key("c1", "task:j/t", "chip_seconds", start, start + timedelta(hours=1))

    hours = [key(START + timedelta(hours=h)) for h in range(48)]
    assert hours == sorted(hours)
    assert all(len(k) == 40 and int(k, 16) >= 0 for k in hours)
    assert hours[0][:8] == f"{int(START.timestamp()):08x}"
    same_second = key(START + timedelta(microseconds=1))
    assert same_second[:8] == hours[0][:8] and same_second != hours[0]


def test_a_correction_is_a_new_line_that_names_the_original() -> None:
    (line,) = charge_interval(task(1, START, START + timedelta(minutes=30)), terms(), PRICES)
    undo = correction(line, quantity=-line.quantity, reason="node was lost", revision=0)
    assert undo.amount_usd == -line.amount_usd
    assert (undo.kind, undo.corrects, undo.corrects_kind) == (
        "correction",
        line.key,
        "chip_seconds",
    )
    assert undo.key != line.key
    assert undo.key != correction(line, quantity=-line.quantity, reason="x", revision=1).key
    with pytest.raises(AttributeError):
        line.amount_usd = Decimal(0)  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(ticks=st.lists(st.integers(0, 40 * 3600), max_size=25), change_s=st.integers(1, 30 * 3600))
def test_reservation_periods_tile_the_term_whatever_the_ticks(
    ticks: list[int], change_s: int
) -> None:
    start = START + timedelta(minutes=17)
    t = terms(start=start, end=start + timedelta(hours=30))
    change = start + timedelta(seconds=change_s)
    book = PRICES.with_chip_price("h200", Decimal("5"), change)
    settled_until = t.start
    periods: list[tuple[datetime, datetime]] = []
    for tick in [*sorted(ticks), 40 * 3600]:
        new = reservation_periods(t, "h200", book, settled_until, START + timedelta(seconds=tick))
        periods += new
        if new:
            settled_until = new[-1][1]
    assert periods[0][0] == t.start and periods[-1][1] == t.end
    for (_, a_end), (b_start, _) in itertools.pairwise(periods):
        assert a_end == b_start
    edges = {p[0] for p in periods}
    assert change in edges or change >= t.end
    for a, b in periods:
        hour = a.replace(minute=0, second=0, microsecond=0)
        assert b <= hour + timedelta(hours=1)
    reserved = [settle_reservation(t, "h200", p, book, Decimal(0)) for p in periods]
    assert sum(x.quantity for x in reserved if x) == 8 * 30 * 3600


def test_a_price_book_refuses_two_prices_at_one_instant_and_replaces_on_republish() -> None:
    from rainier.metering import ChipPrice, PriceBook

    with pytest.raises(ValueError, match="two prices"):
        PriceBook(1, (ChipPrice("h200", Decimal(1), START), ChipPrice("h200", Decimal(2), START)))
    book = PRICES.with_chip_price("h200", Decimal(5), START).with_chip_price(
        "h200", Decimal(6), START
    )
    assert book.chip_price_at("h200", START).usd_per_chip_hour == Decimal(6)
    assert book.version == PRICES.version + 2


def test_bad_terms_and_usage_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="discount"):
        terms(discount=Decimal(1))
    with pytest.raises(ValueError, match="after its start"):
        terms(end=START)
    with pytest.raises(ValueError, match="timezone-aware"):
        terms(start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="token counts"):
        TokenUsage("acme", "c1", "d", "r", "m", -1, 0, START)
    with pytest.raises(ValueError, match="ends before it starts"):
        task(1, START, START - timedelta(seconds=1))


def test_a_corrected_usage_line_no_longer_counts_as_used() -> None:
    t = terms()
    hour = (START, START + timedelta(hours=1))
    (line,) = charge_interval(task(4, START, START + timedelta(hours=1)), t, PRICES)
    undo = correction(line, quantity=-line.quantity, reason="node was lost", revision=0)
    assert used_chip_seconds([line], "c1", "h200", *hour) == 4 * 3600
    assert used_chip_seconds([line, undo], "c1", "h200", *hour) == 0
    assert committed_spend(t, [line, undo]) == 0
