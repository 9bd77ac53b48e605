from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rainier.metering import ContractTerms, TaskInterval, charge_interval, default_price_book
from rainier.metering.chart import burn_down_png

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_burn_down_renders_a_png() -> None:
    terms = ContractTerms(
        "c1", "acme", START, datetime(2027, 1, 1, tzinfo=UTC), Decimal(20_000), {}, Decimal(0)
    )
    lines = [
        line
        for d in range(0, 60, 3)
        for line in charge_interval(
            TaskInterval(
                "acme",
                "c1",
                "j",
                f"t{d}",
                "h200",
                8,
                START + timedelta(days=d),
                START + timedelta(days=d, hours=6),
            ),
            terms,
            default_price_book(),
        )
    ]
    png = burn_down_png(terms, lines, START + timedelta(days=61), width_in=4, height_in=3, dpi=50)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == 200 and int.from_bytes(png[20:24], "big") == 150
    empty = burn_down_png(terms, [], START, width_in=4, height_in=3, dpi=50)
    assert empty.startswith(b"\x89PNG") and empty != png
