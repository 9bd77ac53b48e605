"""Metering at a year's volume: build ~876,000 hourly ledger lines, then a monthly statement.

The ledger comes from `rainier.metering.synthetic`, which the database benchmarks reuse so that
in-memory and stored numbers are measured over the same lines. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from rainier.metering import UsageLine, monthly_statement
from rainier.metering.synthetic import HOURS_PER_YEAR, synthetic_contracts, synthetic_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--hours", type=int, default=HOURS_PER_YEAR)
    parser.add_argument("--month", type=int, default=6)
    args = parser.parse_args()

    contracts = synthetic_contracts(args.tenants, hours=args.hours)
    t0 = time.perf_counter()
    lines = list(synthetic_lines(contracts, hours=args.hours))
    generate_s = time.perf_counter() - t0

    terms = contracts[0]
    year = terms.start.year
    t0 = time.perf_counter()
    statement = monthly_statement(terms, lines, year, args.month)
    statement_s = time.perf_counter() - t0

    by_contract: dict[str, list[UsageLine]] = defaultdict(list)
    for line in lines:
        by_contract[line.contract].append(line)
    t0 = time.perf_counter()
    for other in contracts:
        monthly_statement(other, by_contract[other.contract], year, args.month)
    all_statements_s = time.perf_counter() - t0

    print(
        f"{len(lines)} lines in {generate_s:.1f} s; statement of {terms.contract} "
        f"{year}-{args.month:02d}: {statement.line_count} lines, {statement.invoice_total_usd} USD"
    )
    print(
        json.dumps(
            {
                "benchmark": "metering",
                "tenants": args.tenants,
                "hours": args.hours,
                "lines": len(lines),
                "generate_s": round(generate_s, 3),
                "generate_lines_per_s": round(len(lines) / generate_s),
                "statement_s": round(statement_s, 4),
                "statement_lines": statement.line_count,
                "statement_total_usd": str(statement.invoice_total_usd),
                "all_statements_indexed_s": round(all_statements_s, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
