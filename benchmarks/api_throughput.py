"""Job submissions through the REST API with 8 concurrent clients, on SQLite and PostgreSQL,
and listing 10,000 jobs page by page.

The server runs as its own process (`rainier server`), as in production; clients are threads
of this process, each with one keep-alive connection. Prints one JSON line last:
{"sqlite_submits_per_s", "sqlite_submit_p99_ms", "postgres_submits_per_s",
 "postgres_submit_p99_ms", "list_page_p99_ms"}; postgres fields are null when no PostgreSQL is
reachable (RAINIER_TEST_DATABASE_URL). With RAINIER_CONTROLLER=external the reconciler runs as
`rainier controller` beside the server instead of inside it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

CLIENTS = 8
SUBMISSIONS = int(os.environ.get("BENCH_SUBMISSIONS", "3000"))
LIST_TOTAL = 10_000
PAGE = 100


def start_server(home: Path, database_url: str) -> tuple[list[subprocess.Popen[bytes]], str]:
    """The server, and with RAINIER_CONTROLLER=external a `rainier controller` beside it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "RAINIER_HOME": str(home),
        "RAINIER_DATABASE_URL": database_url,
        "RAINIER_PORT": str(port),
        "RAINIER_LOG_LEVEL": "WARNING",
        "RAINIER_WORKERS": os.environ.get("RAINIER_WORKERS", "2"),
    }
    proc = subprocess.Popen([sys.executable, "-m", "rainier.cli.main", "server"], env=env)
    procs = [proc]
    if env.get("RAINIER_CONTROLLER") == "external":
        command = [sys.executable, "-m", "rainier.cli.main", "controller"]
        procs.append(subprocess.Popen(command, env=env))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return procs, url
        except httpx.HTTPError:
            time.sleep(0.1)
    for p in procs:
        p.kill()
    raise RuntimeError("server did not start")


def tenant_key(url: str) -> str:
    op = httpx.post(f"{url}/api/v1/init").json()["key"]
    h = {"Authorization": f"Bearer {op}"}
    httpx.post(f"{url}/api/v1/tenants", json={"kind": "Tenant", "name": "bench"}, headers=h)
    r = httpx.post(f"{url}/api/v1/keys", json={"tenant": "bench", "role": "member"}, headers=h)
    return str(r.json()["key"])


def submit_load(url: str, key: str, total: int) -> tuple[float, float]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_client = max(1, -(-total // CLIENTS))
    # A name is one live job per tenant, and none of these starts (no h200 node), so each
    # submission has a name of its own; the bodies are encoded before the clock starts.
    run = uuid.uuid4().hex[:6]  # submit_load is called again on the same server

    def body_of(n: int) -> bytes:
        doc = {
            "kind": "Job",
            "name": f"bench-{run}-{n}",
            "command": ["true"],
            "flavor": "h200",
            "chips_per_node": 8,
        }
        return json.dumps(doc).encode()

    host, port = url.removeprefix("http://").split(":")

    def client(c: int) -> None:
        # A keep-alive connection of the standard library: the load generator shares the two
        # cores with the server, so it should cost as little CPU per request as it can.
        mine = []
        bodies = [body_of(c * per_client + i) for i in range(per_client)]
        http = HTTPConnection(host, int(port), timeout=60)
        try:
            for body in bodies:
                headers = {
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": uuid.uuid4().hex,
                }
                t0 = time.perf_counter()
                http.request("POST", "/api/v1/jobs", body, headers)
                response = http.getresponse()
                answer = response.read()
                mine.append(time.perf_counter() - t0)
                if response.status != 201:
                    with lock:
                        errors.append(f"{response.status}: {answer[:200]!r}")
                    return
        finally:
            http.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} submissions failed, first: {errors[0]}")
    latencies.sort()
    return len(latencies) / wall, latencies[int(0.99 * (len(latencies) - 1))] * 1000


def list_pages(url: str, key: str) -> float:
    latencies = []
    cursor = None
    seen = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            t0 = time.perf_counter()
            page = http.get("/api/v1/jobs", params=params).json()
            latencies.append(time.perf_counter() - t0)
            seen += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    if seen < LIST_TOTAL:
        raise RuntimeError(f"listed {seen} jobs, expected {LIST_TOTAL}")
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))] * 1000


def fresh_postgres() -> str | None:
    base = os.environ.get("RAINIER_TEST_DATABASE_URL")
    if not base:
        return None
    name = f"rainier_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    except Exception as exc:
        print(f"PostgreSQL not reachable: {exc}", file=sys.stderr)
        return None
    return base.rsplit("/", 1)[0] + f"/{name}"


def run(database_url: str, with_listing: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        procs, url = start_server(Path(tmp) / "home", database_url)
        try:
            key = tenant_key(url)
            submit_load(url, key, 200)  # warm-up
            rate, p99 = submit_load(url, key, SUBMISSIONS)
            out = {"submits_per_s": rate, "p99_ms": p99}
            if with_listing:
                while (have := len_jobs(url, key)) < LIST_TOTAL:
                    submit_load(url, key, LIST_TOTAL - have + CLIENTS)
                out["list_page_p99_ms"] = list_pages(url, key)
            return out
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)


def len_jobs(url: str, key: str) -> int:
    total, cursor = 0, None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/api/v1/jobs", params=params).json()
            total += len(page["items"])
            if not (cursor := page["next_cursor"]):
                return total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = run(f"sqlite:///{tmp}/bench.db", with_listing=True)
    pg_url = fresh_postgres()
    pg = run(pg_url, with_listing=False) if pg_url else None
    result = {
        "sqlite_submits_per_s": round(sqlite["submits_per_s"], 1),
        "sqlite_submit_p99_ms": round(sqlite["p99_ms"], 1),
        "postgres_submits_per_s": round(pg["submits_per_s"], 1) if pg else None,
        "postgres_submit_p99_ms": round(pg["p99_ms"], 1) if pg else None,
        "list_page_p99_ms": round(sqlite["list_page_p99_ms"], 1),
        "clients": CLIENTS,
        "submissions": SUBMISSIONS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
