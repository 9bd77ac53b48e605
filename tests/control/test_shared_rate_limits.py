"""A key's rate limit holds for the tenant, not per API process: real `rainier server`
processes with 1 and 4 uvicorn workers on one database admit what the limit allows (a
minute's burst, then the steady rate), within 10%, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from rainier.api.ratelimit_shared import Charge, SharedBuckets
from rainier.cli.client import Client
from rainier.serve.tiny_model import build_tiny_llama
from rainier.store.db import Store

from .server_process import ServerProcess

RPM = 12
SECONDS = 5.0
CALLERS = 8


def hammer(url: str, key: str, seconds: float) -> tuple[int, int, float]:
    """Requests from several callers, each on a fresh connection (so they spread over the
    workers), for `seconds`: (admitted, refused, seconds from the first to the last)."""
    counts = {"admitted": 0, "refused": 0}
    other: list[str] = []
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def call() -> None:
        body = {"model": "chat", "prompt": "a", "max_tokens": 1}
        while time.monotonic() < deadline:
            answer = httpx.post(
                f"{url}/v1/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            # admitted requests find no replica (none can be placed) and are answered 503
            kind = {503: "admitted", 429: "refused"}.get(answer.status_code)
            with lock:
                if kind is None:
                    other.append(f"{answer.status_code} {answer.text[:200]}")
                else:
                    counts[kind] += 1

    callers = [threading.Thread(target=call) for _ in range(CALLERS)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert not other, other
    return counts["admitted"], counts["refused"], time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 4])
def test_a_key_limit_holds_across_api_workers(
    workers: int, database_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    server = ServerProcess(
        home,
        database_url,
        {"RAINIER_WORKERS": str(workers), "RAINIER_GATEWAY_WAIT_S": "0"},
    )
    server.start(ready_s=180)  # workers import the whole control plane, on a busy machine
    try:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
        admin = Client(
            server.url, op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
        )
        model = build_tiny_llama(home / "storage" / "acme" / "models" / "tiny")
        admin.post("/api/v1/models", {"name": "tiny", "path": str(model)})
        deployment = {
            "kind": "Deployment",
            "name": "chat",
            "model": "tiny",
            "replicas": {"min": 1, "max": 1},
        }
        admin.post("/api/v1/deployments", deployment)
        limited = op.post(
            "/api/v1/keys", {"tenant": "acme", "role": "member", "rate_limit_rpm": RPM}
        )
        admitted, refused, elapsed = hammer(server.url, limited["key"], SECONDS)
    finally:
        server.stop()
    allowed = RPM + RPM / 60.0 * elapsed  # a full bucket, then the rate
    assert refused > admitted, "the callers asked for far more than the limit"
    assert abs(admitted - allowed) <= 0.1 * allowed, (workers, admitted, refused, elapsed)


def test_shared_buckets_admit_a_burst_then_the_rate_and_take_all_or_none(
    database_url: str,
) -> None:
    store = Store(database_url)
    store.migrate()
    try:
        buckets = SharedBuckets(store)
        per_minute = Charge("key:k:rpm:3", 3, 1.0)  # one unit every 20 s
        states = [buckets.take([per_minute], 100.0)[0] for _ in range(4)]
        assert [s.admitted for s in states] == [True, True, True, False]
        assert [s.remaining() for s in states[:3]] == [2, 1, 0]
        assert states[3].wait_s() == pytest.approx(20.0)
        assert not buckets.take([per_minute], 119.0)[0].admitted
        assert buckets.take([per_minute], 120.0 + 1e-3)[0].admitted

        tokens = Charge("key:k:tpm:600", 600, 500.0)  # 10 units a second
        requests = Charge("key:k:rpm:60", 60, 1.0)
        assert all(s.admitted for s in buckets.take([requests, tokens], 0.0))
        both = buckets.take([requests, Charge(tokens.key, 600, 200.0)], 0.0)
        assert [s.admitted for s in both] == [True, False]
        assert both[1].wait_s() == pytest.approx(10.0), "100 left, 100 short"
        again = buckets.take([requests], 0.0)[0]
        assert again.remaining() == 58, "the refused request took nothing from the key's rpm"

        buckets.give_back(Charge(tokens.key, 600, 450.0))  # the answer was 50 tokens, not 500
        assert buckets.take([Charge(tokens.key, 600, 500.0)], 0.0)[0].admitted
        buckets.give_back(Charge(tokens.key, 600, -100.0))  # it used more than its estimate
        buckets.settle_owed()
        short = buckets.take([Charge(tokens.key, 600, 1.0)], 0.0)[0]
        assert not short.admitted and short.wait_s() == pytest.approx((50 + 1) / 10.0)
        assert buckets.take([Charge(tokens.key, 600, 600.0)], 3600.0)[0].admitted, (
            "an hour later the bucket is full again, and no fuller"
        )
        assert not buckets.take([Charge(tokens.key, 600, 1.0)], 3600.0)[0].admitted
    finally:
        store.dispose()
