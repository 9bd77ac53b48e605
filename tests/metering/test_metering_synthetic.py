from decimal import Decimal

from rainier.metering import monthly_statement
from rainier.metering.synthetic import synthetic_contracts, synthetic_lines


def test_synthetic_ledger_is_deterministic_and_hourly() -> None:
    contracts = synthetic_contracts(tenants=5, hours=30)
    lines = list(synthetic_lines(contracts, hours=30))
    assert len(lines) == 5 * 30
    assert lines == list(synthetic_lines(synthetic_contracts(tenants=5, hours=30), hours=30))
    assert len({x.key for x in lines}) == len(lines)
    statement = monthly_statement(contracts[0], lines, 2026, 1)
    assert statement.line_count == 30
    assert statement.total_usd == sum((x.amount_usd for x in lines[::5]), Decimal(0))
