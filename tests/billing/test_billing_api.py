"""The usage, status, statement, FOCUS and events endpoints and the CLI over them, against the
ledger a real control plane wrote while running jobs."""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import select

from rainier.accounting.ledger_rows import LINE_FIELDS, row_line
from rainier.accounting.meter import Metering
from rainier.cli.client import Client
from rainier.cli.main import cli
from rainier.metering import FOCUS_COLUMNS, UsageLine
from rainier.metering.webhook import SIGNATURE_HEADER, verify
from rainier.store.db import Store
from rainier.store.tables import Contract, PricePoint, SpendAlert, UsageLineRow, utcnow

from .conftest import Cloud, Receiver, wait_until

PY = sys.executable


def sleeper(name: str, seconds: float, chips: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Job",
        "name": name,
        "command": [PY, "-c", f"import time; time.sleep({seconds})"],
        "flavor": "cpu",
        "chips_per_node": chips,
        **extra,
    }


def finished(tenant: Client, job_id: str) -> Callable[[], bool]:
    return lambda: bool(tenant.get(f"/api/v1/jobs/{job_id}")["state"] == "succeeded")


def run_jobs(tenant: Client, *specs: dict[str, Any]) -> list[dict[str, Any]]:
    jobs = [tenant.post("/api/v1/jobs", spec) for spec in specs]
    for job in jobs:
        wait_until(finished(tenant, job["id"]), 60, f"{job['name']} to succeed")
    return jobs


def ledger(database_url: str) -> list[UsageLine]:
    store = Store(database_url)
    try:
        with store.read() as s:
            rows = s.execute(select(*(UsageLineRow.__table__.c[n] for n in LINE_FIELDS))).all()
        return [row_line(r) for r in rows]
    finally:
        store.dispose()


def total(lines: list[UsageLine], attr: str = "amount_usd") -> Decimal:
    return sum((getattr(line, attr) for line in lines), Decimal(0))


def test_usage_status_statement_focus_and_cli(cloud: Cloud, database_url: str) -> None:
    cloud.contract("openai-2026", "openai", discount="0.20")
    tenant = cloud.tenant("openai")
    jobs = run_jobs(tenant, sleeper("train", 0.8, 2), sleeper("eval", 0.5, 1))
    lines = ledger(database_url)
    assert lines and {line.kind for line in lines} == {"chip_seconds"}
    assert {line.resource for line in lines} == {j["id"] for j in jobs}
    assert all(line.contract == "openai-2026" for line in lines)
    assert all(line.rate_usd == Decimal("0.05") * Decimal("0.8") for line in lines)
    today = datetime.now(UTC).date().isoformat()

    by_flavor = tenant.get("/api/v1/usage", since=today, by="flavor")
    (cpu,) = by_flavor["groups"]
    assert (cpu["group"], cpu["unit"]) == ("cpu", "chip_second")
    assert Decimal(cpu["quantity"]) == total(lines, "quantity")
    assert Decimal(by_flavor["total_usd"]) == total(lines)
    by_job = {g["group"]: g for g in tenant.get("/api/v1/usage", by="job")["groups"]}
    for job in jobs:
        mine = [line for line in lines if line.resource == job["id"]]
        assert Decimal(by_job[job["id"]]["quantity"]) == total(mine, "quantity")
        assert by_job[job["id"]]["lines"] == len(mine)
    by_day = tenant.get("/api/v1/usage", by="day")["groups"]
    assert sum(Decimal(g["amount_usd"]) for g in by_day) == total(lines)
    day_csv = httpx.get(
        f"{cloud.url}/api/v1/usage",
        params={"by": "day", "format": "csv"},
        headers=tenant.http.headers,
    )
    assert day_csv.text.splitlines()[0] == "day,unit,quantity,amount_usd,lines"
    assert tenant.get("/api/v1/usage", since="2000-01-01", until="2000-02-01")["groups"] == []

    status = tenant.get("/api/v1/contracts/openai-2026/status")
    assert Decimal(status["spent_usd"]) == total(lines)
    assert Decimal(status["remaining_usd"]) == Decimal("1000") - total(lines)
    assert status["lines"] == len(lines) and Decimal(status["burn_usd_per_day"]) > 0
    assert status["projected_reach_at"] is None or status["projected_reach_at"] > today

    month = datetime.now(UTC).strftime("%Y-%m")
    st = tenant.get("/api/v1/contracts/openai-2026/statement", month=month)
    assert Decimal(st["total_usd"]) == total(lines) and st["line_count"] == len(lines)
    assert sum(Decimal(g["amount_usd"]) for g in st["groups"]) == total(lines)
    assert Decimal(st["drawn_before_usd"]) + Decimal(st["drawn_in_period_usd"]) == total(lines)
    statement_csv = httpx.get(
        f"{cloud.url}/api/v1/contracts/openai-2026/statement",
        params={"month": month, "format": "csv"},
        headers=tenant.http.headers,
    ).text
    rows = list(csv.DictReader(io.StringIO(statement_csv)))
    assert len(rows) == len(lines)
    assert sum(Decimal(r["amount_usd"]) for r in rows) == total(lines)
    empty = tenant.get("/api/v1/contracts/openai-2026/statement", month="2001-01")
    assert empty["line_count"] == 0 and Decimal(empty["total_usd"]) == 0

    focus = httpx.get(f"{cloud.url}/api/v1/billing/focus", headers=tenant.http.headers).text
    reader = csv.DictReader(io.StringIO(focus))
    focus_rows = list(reader)
    assert tuple(reader.fieldnames or ()) == FOCUS_COLUMNS
    assert len(focus_rows) == len(lines)
    assert sum(Decimal(r["BilledCost"]) for r in focus_rows) == total(lines)
    assert len({r["x_IdempotencyKey"] for r in focus_rows}) == len(lines)
    png = httpx.get(
        f"{cloud.url}/api/v1/contracts/openai-2026/burndown.png",
        headers=tenant.http.headers,
        timeout=60,
    )
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    env = {"RAINIER_URL": cloud.url, "RAINIER_API_KEY": tenant.key or ""}
    runner = CliRunner()
    out = runner.invoke(cli, ["usage", "--since", today, "--by", "job"], env=env)
    assert out.exit_code == 0, out.output
    assert all(j["id"] in out.output for j in jobs)
    out = runner.invoke(cli, ["usage", "--tenant", "openai", "-o", "csv"], env=env)
    assert out.output.startswith("flavor,unit,quantity")
    out = runner.invoke(cli, ["contract", "ls"], env=env)
    assert "openai-2026" in out.output
    out = runner.invoke(cli, ["contract", "status", "openai-2026"], env=env)
    assert out.exit_code == 0 and "burn rate" in out.output and "shortfall" in out.output
    out = runner.invoke(cli, ["bill", "--contract", "openai-2026", "--month", month], env=env)
    assert out.exit_code == 0 and f"total {st['total_usd']} USD" in out.output
    with runner.isolated_filesystem():
        out = runner.invoke(cli, ["bill", "--contract", "openai-2026", "-o", "bill.csv"], env=env)
        assert out.exit_code == 0, out.output
        assert len(Path("bill.csv").read_text().splitlines()) == len(lines) + 1
        out = runner.invoke(cli, ["bill", "export", "--focus", "-o", "focus.csv"], env=env)
        assert out.exit_code == 0, out.output
        assert Path("focus.csv").read_text().startswith(",".join(FOCUS_COLUMNS))
    out = runner.invoke(cli, ["bill", "--contract", "nope"], env=env)
    assert out.exit_code == 2
    out = runner.invoke(cli, ["bill"], env=env)
    assert out.exit_code == 2


def test_tenant_isolation(cloud: Cloud) -> None:
    cloud.contract("openai-2026", "openai")
    cloud.tenant("openai")
    mallory = cloud.tenant("mallory")
    run_jobs(mallory, sleeper("m", 0.1, 1))
    contract_paths = ["status", "statement", "burndown.png", "webhook"]
    for path in contract_paths:
        r = mallory.http.get(f"/api/v1/contracts/openai-2026/{path}")
        assert r.status_code == 404, path
        assert cloud.op.http.get(f"/api/v1/contracts/openai-2026/{path}").status_code == 200
    for path, params in [
        ("/api/v1/usage", {"tenant": "openai"}),
        ("/api/v1/billing/focus", {"contract": "openai-2026"}),
        ("/api/v1/billing/focus", {"tenant": "openai"}),
        ("/api/v1/events", {"object": "openai-2026"}),
    ]:
        assert mallory.http.get(path, params=params).status_code == 404, (path, params)
        assert cloud.op.http.get(path, params=params).status_code == 200, (path, params)
    mine = mallory.get("/api/v1/usage")
    assert mine["tenant"] == "mallory" and mine["groups"]
    everyone = cloud.op.get("/api/v1/usage")
    assert everyone["tenant"] is None and Decimal(everyone["total_usd"]) > 0
    focus = mallory.http.get("/api/v1/billing/focus").text
    assert "openai" not in focus and "mallory" in focus


def test_alerts_fire_once_and_webhooks_are_signed(
    cloud: Cloud, database_url: str, receiver: Receiver
) -> None:
    store = Store(database_url)
    try:
        with store.write() as s:
            now = datetime(2000, 1, 1, tzinfo=UTC)
            s.add(PricePoint(version=2, kind="chip", sku="cpu", effective_from=now, usd=3600))
    finally:
        store.dispose()
    receiver.fail_first = 1
    cloud.contract(
        "small",
        "openai",
        committed_usd="10.00",
        monthly_budget_usd="1000.00",
        alert_webhook_url=receiver.url,
    )
    tenant = cloud.tenant("openai")
    secret = tenant.get("/api/v1/contracts/small/webhook")["secret"].encode()
    run_jobs(tenant, sleeper("burn", 4.0, 4))
    wait_until(lambda: len(receiver.received) >= 3, 30, "three webhooks")
    payloads = receiver.payloads()
    assert sorted(p["threshold_pct"] for p in payloads) == [50, 80, 100]
    assert {p["type"] for p in payloads} == {"commitment.threshold_crossed"}
    assert all(Decimal(p["spent_usd"]) >= Decimal(p["threshold_pct"]) / 10 for p in payloads)
    for r in receiver.received:
        assert verify(secret, r.body, r.headers[SIGNATURE_HEADER.lower()], int(time.time()))
        assert not verify(b"wrong", r.body, r.headers[SIGNATURE_HEADER.lower()], int(time.time()))
    assert receiver.failed == 1
    events = tenant.get("/api/v1/events", object="small", kind="alert")["items"]
    assert sorted(int(e["message"].split("%")[0].split()[-1]) for e in events) == [50, 80, 100]
    run_jobs(tenant, sleeper("more", 0.5, 4))
    store = Store(database_url)
    try:
        with store.read() as s:
            row = s.scalars(select(Contract).where(Contract.name == "small")).one()
            alerts = s.scalars(select(SpendAlert)).all()
        assert not Metering(store).check_alerts(row, utcnow()), "an alert fired twice"
        assert len(alerts) == 3 and all(a.delivered_at is not None for a in alerts)
        assert sorted(a.attempts for a in alerts) == [1, 1, 2]
    finally:
        store.dispose()
    assert len(tenant.get("/api/v1/events", object="small", kind="alert")["items"]) == 3
    assert len(receiver.received) == 3
