"""The console's jobs page with 10,000 jobs in the store: how long its first load takes.

The store is filled directly (10,000 jobs of one tenant in every state), then `rainier server`
runs as its own process, as in production. A tenant signs in and asks for `/jobs`: the first
load after start (cold), then repeated loads, a state filter and an older page; when Debian's
Chromium is installed, the page is also loaded in it and timed to its load event (htmx and the
stylesheet included). Prints one JSON line last: {"jobs_in_store", "first_load_ms",
"load_p50_ms", "load_p99_ms", "filtered_p50_ms", "older_page_p50_ms", "browser_first_load_ms",
"budget_ms", "under_budget"}; browser_first_load_ms is null without chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from rainier.store.db import Store
from rainier.store.keys import hash_key, new_key
from rainier.store.tables import ApiKey, Job, Tenant, new_id

JOBS = 10_000
ROUNDS = 30
BUDGET_MS = 1000.0
STATES = ("succeeded", "succeeded", "succeeded", "failed", "stopped", "pending")


def seed(database_url: str) -> str:
    """10,000 jobs of tenant `acme`, and an admin key for it (returned)."""
    store = Store(database_url)
    store.migrate()
    key = new_key()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with store.write() as s:
        tenant = Tenant(id=new_id("tnt"), name="acme", display_name="Acme")
        s.add(tenant)
        s.flush()
        s.add(
            ApiKey(
                id=new_id("key"),
                tenant_id=tenant.id,
                role="admin",
                name="bench",
                key_hash=hash_key(key),
                prefix=key[:10],
            )
        )
        s.flush()
        rows: list[dict[str, Any]] = []
        for i in range(JOBS):
            state = STATES[i % len(STATES)]
            at = start + timedelta(seconds=30 * i)
            rows.append(
                {
                    "id": new_id("job"),
                    "tenant_id": tenant.id,
                    "name": f"sweep-{i:05d}",
                    "kind": "job",
                    "spec": {"kind": "Job", "name": f"sweep-{i:05d}", "flavor": "cpu"},
                    "flavor": "cpu",
                    "nodes": 1 + i % 4,
                    "chips_per_node": 8,
                    "priority": 0,
                    "state": state,
                    "reason": "all tasks exited with code 0"
                    if state == "succeeded"
                    else "waiting for 4x8 cpu chips: not enough free chips now",
                    "attempt": 0,
                    "restarts": 0,
                    "preemptions": 0,
                    "created_at": at,
                    "metrics": {"step": i, "loss": 2.5},
                }
            )
        s.execute(insert(Job), rows)
    store.dispose()
    return key


def start_server(home: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "RAINIER_HOME": str(home),
        "RAINIER_DATABASE_URL": database_url,
        "RAINIER_PORT": str(port),
        "RAINIER_LOG_LEVEL": "WARNING",
        "RAINIER_RECONCILE": "0",  # the jobs are rows, not processes: nothing to reconcile
    }
    proc = subprocess.Popen([sys.executable, "-m", "rainier.cli.main", "server"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def timed(client: httpx.Client, path: str) -> tuple[float, str]:
    began = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    assert "sweep-" in response.text, response.text[:500]
    return elapsed, response.text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_browser(url: str, cookie: str) -> float | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        context = browser.new_context()
        context.add_cookies([{"name": "rainier_session", "value": cookie, "url": url}])
        page = context.new_page()
        page.goto(f"{url}/jobs", wait_until="load")
        load_ms = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        assert page.locator("#job-rows tr[data-job]").count() == 50
        browser.close()
    return float(load_ms)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        database_url = f"sqlite:///{home / 'rainier.db'}"
        key = seed(database_url)
        proc, url = start_server(home, database_url)
        try:
            client = httpx.Client(base_url=url, timeout=30)
            assert client.post("/login", data={"key": key}).status_code == 303
            first_ms, page = timed(client, "/jobs")
            assert page.count('data-job="') == 50
            loads = [timed(client, "/jobs")[0] for _ in range(ROUNDS)]
            filtered = [timed(client, "/jobs?state=failed")[0] for _ in range(ROUNDS)]
            cursor = page.split("cursor=")[-1].split('"')[0]
            older = [timed(client, f"/jobs?cursor={cursor}")[0] for _ in range(ROUNDS)]
            browser_ms = in_browser(url, client.cookies["rainier_session"])
        finally:
            proc.terminate()
            proc.wait(30)
    worst = max(first_ms, browser_ms or 0.0)
    print(
        json.dumps(
            {
                "jobs_in_store": JOBS,
                "first_load_ms": round(first_ms, 1),
                "load_p50_ms": round(percentile(loads, 0.5), 1),
                "load_p99_ms": round(percentile(loads, 0.99), 1),
                "filtered_p50_ms": round(percentile(filtered, 0.5), 1),
                "older_page_p50_ms": round(percentile(older, 0.5), 1),
                "browser_first_load_ms": round(browser_ms, 1) if browser_ms is not None else None,
                "budget_ms": BUDGET_MS,
                "under_budget": worst < BUDGET_MS,
            }
        )
    )


if __name__ == "__main__":
    main()
