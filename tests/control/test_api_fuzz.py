"""schemathesis against a real `rainier server`: every phase (examples, coverage, fuzzing,
stateful), 25 examples per operation (10 on PostgreSQL), as the operator and as a tenant's admin, and every check
but `positive_data_acceptance` must pass: no server error, no answer its schema does not
declare, no schema-invalid request accepted.

What is left out, and why:
- `positive_data_acceptance`: a schema-valid document is still refused when it names what does
  not exist (a tenant, a flavor outside the catalog, a model) or when the key's role may not do
  it (a tenant creating tenants); JSON Schema cannot say either.
- `DELETE /api/v1/keys/{key_id}`: the stateful phase would revoke the keys the run uses (the
  operator's once it made a second operator key). Revocation has its own tests.
- `POST /api/v1/nodes/local`: it registers this machine.
The server runs without its reconciler (`RAINIER_RECONCILE=0`), so no generated job is ever
started on this machine; what is tested is the API's answer to what it is sent.
One worker: CPython 3.11's `ast` constructor keeps its recursion depth per interpreter, so two
threads building strategies at once can fail with "AST constructor recursion depth mismatch",
an error of the tool that says nothing of the API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .server_process import ServerProcess

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("RAINIER_FUZZ_EXAMPLES", "25"))
# The same API on PostgreSQL: what differs is the store's answers (constraints, types), which
# fewer examples per operation reach as well; the run on SQLite explores the inputs.
EXAMPLES_ON_POSTGRES = int(os.environ.get("RAINIER_FUZZ_EXAMPLES_ON_POSTGRES", "10"))
SEED = os.environ.get("RAINIER_FUZZ_SEED", "18")
CHECKS_LEFT_OUT = "positive_data_acceptance"
PATHS_LEFT_OUT = ("/api/v1/keys/{key_id}", "/api/v1/nodes/local")


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("schemathesis is not installed (it is in the dev extra)")
    return found


def _keys(url: str) -> dict[str, str]:
    operator = httpx.post(f"{url}/api/v1/init").json()["key"]
    headers = {"Authorization": f"Bearer {operator}"}
    httpx.post(f"{url}/api/v1/tenants", json={"kind": "Tenant", "name": "fuzz"}, headers=headers)
    tenant = httpx.post(
        f"{url}/api/v1/keys", json={"tenant": "fuzz", "role": "admin"}, headers=headers
    ).json()["key"]
    return {"operator": operator, "tenant": tenant}


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path) -> None:
    command = _schemathesis()
    home = tmp_path / "home"
    home.mkdir()
    server = ServerProcess(home, database_url, env={"RAINIER_RECONCILE": "0"})
    server.start()
    try:
        keys = _keys(server.url)
        for who, key in keys.items():
            argv = [
                command,
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--max-examples",
                str(EXAMPLES_ON_POSTGRES if database_url.startswith("postgresql") else EXAMPLES),
                "--checks",
                "all",
                "--exclude-checks",
                CHECKS_LEFT_OUT,
                "--seed",
                SEED,
                "--no-shrink",
                "--workers",
                "1",
                "--request-timeout",
                "30",
            ]
            for path in PATHS_LEFT_OUT:
                argv += ["--exclude-path", path]
            done = _run(argv, tmp_path)
            assert done.returncode == 0, f"as {who}:\n{done.stdout[-12000:]}\n{done.stderr[-2000:]}"
            summary = done.stdout[done.stdout.rfind("SUMMARY") :]
            for phase in ("Coverage", "Fuzzing", "Stateful"):
                assert f"✅ {phase}" in summary, f"as {who}: {phase} did not pass\n{summary}"
        # the keys the runs used still work: nothing revoked them
        for key in keys.values():
            answer = httpx.get(
                f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 200
    finally:
        server.stop()
    log = (home.parent / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
