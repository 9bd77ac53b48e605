"""Metering at a year's volume: build ~876,000 hourly ledger lines, then a monthly statement.

The ledger comes from `rainier.metering.synthetic`, which the database benchmarks reuse so that
in-memory and stored numbers are measured over the same lines. The same lines are then stored:
bulk ingest into a fresh SQLite file, and the statement the API serves (`stored_statement`)
timed over the full table, on SQLite and on a fresh PostgreSQL database when
RAINIER_TEST_DATABASE_URL names a reachable server (null otherwise). The last line printed is
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rainier.accounting.bulk_load import ingest_lines
from rainier.accounting.ledger_rows import stored_statement
from rainier.metering import ContractTerms, Statement, UsageLine, monthly_statement
from rainier.metering.synthetic import HOURS_PER_YEAR, synthetic_contracts, synthetic_lines
from rainier.store.db import Store


@contextmanager
def fresh_postgres() -> Iterator[str | None]:
    """A new database on the test server, dropped afterwards; None when there is none."""
    url = os.environ.get("RAINIER_TEST_DATABASE_URL")
    if not url:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    name = f"rainier_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError:
        admin.dispose()
        yield None
        return
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def stored(
    url: str, lines: list[UsageLine], terms: ContractTerms, year: int, month: int
) -> tuple[float, float, float, Statement]:
    """(lines ingested per second, the same per second of this process's CPU, seconds for one
    statement over the full table, the statement). The CPU figure tells the code's own speed
    apart from a machine busy with other work."""
    store = Store(url)
    try:
        store.migrate()
        t0, cpu0 = time.perf_counter(), time.process_time()
        ingest_lines(store, lines)
        ingest_s, ingest_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        if not store.is_sqlite:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE usage_lines")
        best = float("inf")
        statement = None
        for _ in range(3):
            t0 = time.perf_counter()
            with store.read() as s:
                statement = stored_statement(s, terms, year, month)
            best = min(best, time.perf_counter() - t0)
        assert statement is not None
        return len(lines) / ingest_s, len(lines) / ingest_cpu_s, best, statement
    finally:
        store.dispose()


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

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'metering.db'}"
        ingest_sqlite, ingest_sqlite_cpu, statement_sqlite, from_sqlite = stored(
            url, lines, terms, year, args.month
        )
    assert from_sqlite.total_usd == statement.total_usd
    print(
        f"sqlite: {ingest_sqlite:,.0f} lines/s ingested ({ingest_sqlite_cpu:,.0f} per CPU second),"
        f" statement {statement_sqlite:.3f} s"
    )
    ingest_postgres = statement_postgres = None
    with fresh_postgres() as pg_url:
        if pg_url is not None:
            ingest_postgres, _, statement_postgres, from_pg = stored(
                pg_url, lines, terms, year, args.month
            )
            assert from_pg.total_usd == statement.total_usd
            print(
                f"postgres: {ingest_postgres:,.0f} lines/s ingested, "
                f"statement {statement_postgres:.3f} s"
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
                "ingest_lines_per_s": round(ingest_sqlite),
                "ingest_lines_per_cpu_s": round(ingest_sqlite_cpu),
                "statement_s_sqlite": round(statement_sqlite, 4),
                "ingest_lines_per_s_postgres": None
                if ingest_postgres is None
                else round(ingest_postgres),
                "statement_s_postgres": None
                if statement_postgres is None
                else round(statement_postgres, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
