"""Flavors are data: an operator publishes a `kind: Flavor` the code never heard of, registers a
node of it, signs a contract on it, and a job on it is scheduled and billed at its price; a
later price change bills later work and reprices nothing already billed."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy import select

from rainier.catalog import DEFAULT_FLAVORS
from rainier.cli.client import Client
from rainier.store.db import Store
from rainier.store.tables import UsageLineRow

from .conftest import Cloud, job_state, wait_until

FLAVOR = {
    "kind": "Flavor",
    "name": "x9",
    "memory_gb": 96,
    "peak_tflops": {"bf16": 500, "fp8": 1000},
    "list_usd_per_chip_hour": "2.40",
    "device_env": "CUDA_VISIBLE_DEVICES",
}
SHOW = "import os; print('devices', os.environ['CUDA_VISIBLE_DEVICES'])"


def lines(cloud: Cloud, job_id: str) -> list[UsageLineRow]:
    store = Store(cloud.settings.database_url)
    try:
        with store.read() as s:
            return list(s.scalars(select(UsageLineRow).where(UsageLineRow.resource == job_id)))
    finally:
        store.dispose()


def run(tenant: Client, name: str) -> dict[str, object]:
    doc = {"kind": "Job", "name": name, "flavor": "x9", "chips_per_node": 2}
    job = tenant.post("/api/v1/jobs", {**doc, "command": [sys.executable, "-c", SHOW]})
    done: dict[str, object] = wait_until(job_state(tenant, job["id"], "succeeded", "failed"))
    assert done["state"] == "succeeded"
    return done


def test_a_flavor_not_in_code_is_scheduled_and_billed_at_its_price(cloud: Cloud) -> None:
    assert "x9" not in DEFAULT_FLAVORS
    node = {"kind": "Node", "name": "x9-1", "flavor": "x9", "chips": 8}
    refused = cloud.op.http.post("/api/v1/nodes", json=node)
    assert refused.status_code == 422 and "unknown flavor 'x9'" in refused.text

    tenant = cloud.tenant("acme")
    member: httpx.Response = tenant.http.post("/api/v1/flavors", json=FLAVOR)
    assert member.status_code == 403
    bad = cloud.op.http.post("/api/v1/flavors", json={**FLAVOR, "peak_tflops": {"bf16": -1}})
    assert bad.status_code == 422 and "peak_tflops" in bad.text
    assert "x9" not in {f["name"] for f in cloud.op.get("/api/v1/flavors")}

    published = cloud.op.post("/api/v1/flavors", FLAVOR)
    assert published["price_published"] and published["peak_tflops"]["fp8"] == 1000
    listed = {f["name"]: f for f in tenant.get("/api/v1/flavors")}
    assert listed["x9"]["source"] == "operator" and listed["h200"]["source"] == "default"
    cloud.op.post("/api/v1/nodes", node)
    now = datetime.now(UTC)
    cloud.op.post(
        "/api/v1/contracts",
        {
            "kind": "Contract",
            "name": "acme-x9",
            "tenant": "acme",
            "term": {"start": now.isoformat(), "end": (now + timedelta(days=365)).isoformat()},
            "committed_usd": "1000",
            "guaranteed_chips": {"x9": 8},
        },
    )
    first = run(tenant, "first")
    assert "devices 0,1" in tenant.get(f"/api/v1/jobs/{first['id']}/logs")["data"]
    billed = wait_until(lambda: lines(cloud, str(first["id"])), what="the first job's bill")
    assert {line.sku for line in billed} == {"x9"}
    assert {line.rate_usd for line in billed} == {Decimal("2.40")}
    before = {(line.key, line.rate_usd, line.amount_usd) for line in billed}

    cloud.op.post("/api/v1/flavors", {**FLAVOR, "list_usd_per_chip_hour": "3.60"})
    second = run(tenant, "second")
    rebilled = wait_until(lambda: lines(cloud, str(second["id"])), what="the second job's bill")
    assert {line.rate_usd for line in rebilled} == {Decimal("3.60")}
    after = {(line.key, line.rate_usd, line.amount_usd) for line in lines(cloud, str(first["id"]))}
    assert after == before  # nothing billed before the change was repriced
