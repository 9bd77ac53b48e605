"""Job tokens live as long as their job and are signed with a key outside the database; the last
operator key cannot be revoked, and `rainier admin reset-operator` recovers an installation."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rainier.cli.client import Client
from rainier.store.keys import (
    JOB_TOKEN_KEY_ENV,
    JOB_TOKEN_KEY_FILE,
    JobTokens,
    installation_secret,
)
from rainier.store.tables import Meta

from .conftest import Cloud, job_state, wait_until

CONTRACT = {
    "kind": "Contract",
    "name": "alpha-2026",
    "tenant": "alpha",
    "term": {"start": "2026-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
    "committed_usd": "1000",
    "guaranteed_chips": {"cpu": 1},
}
WAIT = [sys.executable, "-c", "import time; time.sleep(120)"]


def status(client: Client, method: str, path: str) -> int:
    return client.http.request(method, path).status_code


def test_a_job_token_is_refused_once_its_job_ended(cloud: Cloud) -> None:
    cloud.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    alpha = cloud.tenant("alpha")
    cloud.op.post("/api/v1/contracts", CONTRACT)
    job = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "long", "command": WAIT})
    wait_until(job_state(alpha, job["id"], "running"), what="the job to run")
    token = Client(cloud.server.url, cloud.server.app.state.auth.tokens.sign(job["id"]))
    reads = [
        ("GET", f"/api/v1/jobs/{job['id']}"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/contracts/alpha-2026/webhook"),
        ("GET", "/v1/models"),
    ]
    for method, path in reads:
        assert status(token, method, path) == 200, path
    alpha.post(f"/api/v1/jobs/{job['id']}/stop")
    wait_until(job_state(alpha, job["id"], "stopped"), what="the job to stop")
    for method, path in reads:
        assert status(token, method, path) == 401, path
    body = {"step": 1, "metrics": {"loss": 1.0}}
    assert token.http.post(f"/api/v1/jobs/{job['id']}/metrics", json=body).status_code == 401
    assert token.http.get("/v1/models").json()["error"]["code"] == "invalid_api_key"


def test_the_database_alone_does_not_sign_job_tokens(cloud: Cloud) -> None:
    """The signing key is a 0600 file under the server's home; what the database holds (the
    old installation secret included) forges nothing."""
    alpha = cloud.tenant("alpha")
    job = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "long", "command": WAIT})
    key_file = cloud.settings.home / JOB_TOKEN_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    store = cloud.server.app.state.store
    installation_secret(store)  # the secret the database held signed tokens before
    genuine = Client(cloud.server.url, cloud.server.app.state.auth.tokens.sign(job["id"]))
    assert status(genuine, "GET", f"/api/v1/jobs/{job['id']}") == 200
    with store.read() as s:
        secrets_in_db = [bytes.fromhex(m.value) for m in s.query(Meta) if len(m.value) == 64]
    assert secrets_in_db
    for secret in secrets_in_db:
        for message in (job["id"], f"job\x1f{job['id']}"):
            mac = hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()
            forged = Client(cloud.server.url, f"rj_{job['id']}.{mac}")
            assert status(forged, "GET", f"/api/v1/jobs/{job['id']}") == 401
    alpha.post(f"/api/v1/jobs/{job['id']}/stop")


def test_rotation_verifies_old_tokens_and_signs_with_the_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = os.urandom(32).hex(), os.urandom(32).hex()
    monkeypatch.setenv(JOB_TOKEN_KEY_ENV, old)
    before = JobTokens.load(tmp_path)
    token = before.sign("job-1")
    monkeypatch.setenv(JOB_TOKEN_KEY_ENV, f"{new},{old}")
    during = JobTokens.load(tmp_path)
    assert during.job_of(token) == "job-1"
    assert during.sign("job-1") != token and during.job_of(during.sign("job-1")) == "job-1"
    monkeypatch.setenv(JOB_TOKEN_KEY_ENV, new)
    assert JobTokens.load(tmp_path).job_of(token) is None
    monkeypatch.setenv(JOB_TOKEN_KEY_ENV, "abcd")
    with pytest.raises(ValueError, match="32 bytes"):
        JobTokens.load(tmp_path)


def _operator_keys(client: Client) -> list[dict[str, object]]:
    return [k for k in client.get("/api/v1/keys")["items"] if k["role"] == "operator"]


def test_the_last_operator_key_cannot_be_revoked(cloud: Cloud) -> None:
    (first,) = _operator_keys(cloud.op)
    refused = cloud.op.http.delete(f"/api/v1/keys/{first['id']}")
    assert refused.status_code == 409 and "last operator key" in refused.json()["message"]
    assert status(cloud.op, "GET", "/api/v1/nodes") == 200
    second = cloud.op.post("/api/v1/keys", {"role": "operator", "name": "spare"})
    cloud.op.delete(f"/api/v1/keys/{first['id']}")
    spare = Client(cloud.server.url, second["key"])
    assert spare.http.delete(f"/api/v1/keys/{second['id']}").status_code == 409
    assert status(spare, "GET", "/api/v1/nodes") == 200


def test_reset_operator_recovers_an_installation(cloud: Cloud) -> None:
    """Every operator key lost: the offline command on the server's machine makes a new one
    that the running server takes, and can revoke the others."""
    env = {
        **os.environ,
        "RAINIER_HOME": str(cloud.settings.home),
        "RAINIER_DATABASE_URL": cloud.settings.database_url,
    }
    command = [sys.executable, "-m", "rainier.cli.main", "admin", "reset-operator"]
    done = subprocess.run(
        [*command, "--revoke-others"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().rsplit(" ", 1)[-1]
    assert key.startswith("rk_")
    recovered = Client(cloud.server.url, key)
    assert status(recovered, "GET", "/api/v1/nodes") == 200
    wait_until(lambda: status(cloud.op, "GET", "/api/v1/nodes") == 401, what="the old key revoked")
    assert [k["name"] for k in _operator_keys(recovered) if k["revoked_at"] is None] == [
        "recovered operator"
    ]
    assert httpx.post(f"{cloud.server.url}/api/v1/init").status_code == 409
