"""Billed chip-seconds equal held chip-seconds, exactly, through restarts, stops and a kill -9 of
the server: what the executor recorded for each task (spawned .. exited_at, in microseconds)
is what the ledger says, and no idempotency key is stored twice."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from rainier.cli.client import Client
from rainier.control.local import spawned_micros
from rainier.store.db import Store
from rainier.store.tables import Task, UsageLineRow
from tests.control.server_process import ServerProcess

from .conftest import FAST_METERING, wait_until

PY = sys.executable
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    (tmp_path / "home").mkdir()
    proc = ServerProcess(tmp_path / "home", database_url, FAST_METERING)
    proc.start()
    yield proc
    proc.stop()


def job(name: str, code: str, chips: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Job",
        "name": name,
        "command": [PY, "-c", code],
        "flavor": "cpu",
        "chips_per_node": chips,
        **extra,
    }


def held_chip_micros(tasks_dir: Path, chips: dict[str, int]) -> int:
    """chip-microseconds from the executor's own records of every task that ran."""
    held = 0
    for task_dir in sorted(tasks_dir.iterdir()):
        spawned = spawned_micros(task_dir)
        exited = int((task_dir / "exited_at").read_text())
        assert spawned is not None and exited > spawned
        held += (exited - spawned) * chips[task_dir.name]
    return held


def finished(client: Client, job_id: str, *states: str) -> bool:
    return client.get(f"/api/v1/jobs/{job_id}")["state"] in states


@pytest.mark.slow
def test_billed_equals_held_across_kill9(
    server: ServerProcess, tmp_path: Path, database_url: str
) -> None:
    op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
    op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 16})
    op.post("/api/v1/tenants", {"kind": "Tenant", "name": "openai"})
    op.post(
        "/api/v1/contracts",
        {
            "kind": "Contract",
            "name": "openai-c",
            "tenant": "openai",
            "term": {"start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"},
            "committed_usd": "100.00",
            "discount": "0.35",
            "backdate": True,
        },
    )
    tenant = Client(
        server.url, op.post("/api/v1/keys", {"tenant": "openai", "role": "admin"})["key"]
    )
    flaky = (  # its checkpoint folder, which a sandboxed task may write, outlives an attempt
        "import os, sys, time, pathlib; "
        "p = pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'flaky'); "
        "first = not p.exists(); p.touch(); time.sleep(0.7); sys.exit(3 if first else 0)"
    )
    jobs = [
        tenant.post("/api/v1/jobs", job("short", "import time; time.sleep(0.5)", 2)),
        tenant.post("/api/v1/jobs", job("flaky", flaky, 3, max_restarts=1)),
        tenant.post("/api/v1/jobs", job("across", "import time; time.sleep(4)", 4)),
        tenant.post("/api/v1/jobs", job("stopped", "import time; time.sleep(600)", 1)),
    ]
    ids = {j["name"]: j["id"] for j in jobs}
    wait_until(lambda: finished(tenant, ids["short"], "succeeded"), 60, "short to finish")
    server.kill9()
    server.start()
    for name in ("short", "flaky", "across"):
        wait_until(partial(finished, tenant, ids[name], "succeeded"), 60, f"{name} to finish")
    tenant.post(f"/api/v1/jobs/{ids['stopped']}/stop")
    wait_until(lambda: finished(tenant, ids["stopped"], "stopped"), 60, "stopped to stop")
    restarted = tenant.get(f"/api/v1/jobs/{ids['flaky']}")
    assert restarted["restarts"] == 1

    store = Store(database_url)
    try:
        with store.read() as s:
            chips = {t.id: t.chips for t in s.scalars(select(Task))}
            billed_until = {t.id: t.billed_until for t in s.scalars(select(Task))}
            lines = s.execute(
                select(UsageLineRow.key, UsageLineRow.quantity, UsageLineRow.source).where(
                    UsageLineRow.kind == "chip_seconds"
                )
            ).all()
            stored = s.scalar(select(func.count()).select_from(UsageLineRow))
    finally:
        store.dispose()
    assert len(chips) == 5
    tasks_dir = tmp_path / "home" / "tasks"
    held = held_chip_micros(tasks_dir, chips)
    billed = sum((q for _, q, _ in lines), Decimal(0))
    assert billed * 1_000_000 == held
    keys = [k for k, _, _ in lines]
    assert len(keys) == len(set(keys)) == stored
    for task_id in chips:
        exited = int((tasks_dir / task_id / "exited_at").read_text())
        until = billed_until[task_id]
        assert until is not None
        assert (until - EPOCH) // timedelta(microseconds=1) == exited
    per_task = {line[2] for line in lines}
    assert len(per_task) == 5 and len(lines) > 5
