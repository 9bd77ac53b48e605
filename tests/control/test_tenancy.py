"""A key of one tenant can never see, change or infer another tenant's objects."""

from __future__ import annotations

import sys

import httpx
import pytest

from rainier.cli.client import Client, UsageError

from .conftest import Cloud, job_state, wait_until

CONTRACT = {
    "kind": "Contract",
    "tenant": "alpha",
    "term": {"start": "2026-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
    "committed_usd": "1000",
    "guaranteed_chips": {"cpu": 1},
    "backdate": True,
}


def raw(client: Client, method: str, path: str, **kw: object) -> httpx.Response:
    return client.http.request(method, path, **kw)  # type: ignore[arg-type]


@pytest.fixture
def two_tenants(cloud: Cloud) -> tuple[Cloud, Client, Client, dict[str, str]]:
    cloud.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    alpha, beta = cloud.tenant("alpha"), cloud.tenant("beta")
    cloud.op.post("/api/v1/contracts", {**CONTRACT, "name": "alpha-2026"})
    job = alpha.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "secret-run", "command": [sys.executable, "-c", "print('hi')"]},
    )
    wait_until(job_state(alpha, job["id"], "succeeded"), what="alpha's job")
    alpha.post(f"/api/v1/jobs/{job['id']}/metrics", {"step": 1, "metrics": {"loss": 2.0}})
    key_id = alpha.get("/api/v1/keys")["items"][0]["id"]
    return cloud, alpha, beta, {"job": job["id"], "key": key_id}


def test_other_tenants_objects_are_not_found(
    two_tenants: tuple[Cloud, Client, Client, dict[str, str]],
) -> None:
    _, alpha, beta, ids = two_tenants
    job = ids["job"]
    for method, path in [
        ("GET", f"/api/v1/jobs/{job}"),
        ("GET", "/api/v1/jobs/secret-run"),
        ("GET", f"/api/v1/jobs/{job}/logs"),
        ("GET", f"/api/v1/jobs/{job}/metrics"),
        ("POST", f"/api/v1/jobs/{job}/stop"),
        ("GET", "/api/v1/tenants/alpha"),
        ("GET", "/api/v1/contracts/alpha-2026"),
        ("DELETE", f"/api/v1/keys/{ids['key']}"),
        ("GET", "/api/v1/keys?tenant=alpha"),
        ("GET", "/api/v1/jobs?tenant=alpha"),
    ]:
        response = raw(beta, method, path)
        assert response.status_code == 404, (method, path, response.status_code)
        assert "alpha" not in response.text or "not found" in response.text
    metrics = raw(beta, "POST", f"/api/v1/jobs/{job}/metrics", json={"step": 2, "metrics": {}})
    assert metrics.status_code == 404
    # and alpha still sees all of it, unchanged
    assert alpha.get(f"/api/v1/jobs/{job}")["state"] == "succeeded"
    assert alpha.get(f"/api/v1/jobs/{job}/metrics") == [{"step": 1, "loss": 2.0}]
    assert alpha.get("/api/v1/keys")["items"][0]["revoked_at"] is None


def test_lists_hold_only_own_objects(
    two_tenants: tuple[Cloud, Client, Client, dict[str, str]],
) -> None:
    cloud, alpha, beta, _ = two_tenants
    assert beta.get("/api/v1/jobs")["items"] == []
    assert [t["name"] for t in beta.get("/api/v1/tenants")["items"]] == ["beta"]
    assert beta.get("/api/v1/contracts")["items"] == []
    assert {k["tenant"] for k in beta.get("/api/v1/keys")["items"]} == {"beta"}
    assert len(alpha.get("/api/v1/jobs")["items"]) == 1
    assert len(cloud.op.get("/api/v1/jobs")["items"]) == 1
    assert {t["name"] for t in cloud.op.get("/api/v1/tenants")["items"]} == {"alpha", "beta"}


def test_cannot_act_in_another_tenant(
    two_tenants: tuple[Cloud, Client, Client, dict[str, str]],
) -> None:
    _, alpha, beta, _ = two_tenants
    spec = {"kind": "Job", "name": "sneak", "tenant": "alpha", "command": ["true"]}
    assert raw(beta, "POST", "/api/v1/jobs", json=spec).status_code == 404
    keys = raw(beta, "POST", "/api/v1/keys", json={"tenant": "alpha", "role": "admin"})
    assert keys.status_code == 404
    # a name that exists and one that does not are answered alike: nothing to infer
    ghost = raw(beta, "POST", "/api/v1/jobs", json={**spec, "tenant": "no-such-tenant"})
    assert ghost.status_code == 404
    assert len(alpha.get("/api/v1/jobs")["items"]) == 1


def test_roles(cloud: Cloud) -> None:
    member = cloud.tenant("gamma", role="member")
    admin = cloud.tenant("gamma", role="admin")
    assert raw(member, "POST", "/api/v1/keys", json={"role": "member"}).status_code == 403
    assert raw(admin, "POST", "/api/v1/keys", json={"role": "operator"}).status_code == 403
    assert (
        raw(admin, "POST", "/api/v1/tenants", json={"kind": "Tenant", "name": "x"}).status_code
        == 403
    )
    assert (
        raw(
            admin, "POST", "/api/v1/contracts", json={**CONTRACT, "name": "c", "tenant": "gamma"}
        ).status_code
        == 403
    )
    assert raw(admin, "GET", "/api/v1/nodes").status_code == 403
    made = admin.post("/api/v1/keys", {"role": "member", "name": "ci"})
    assert made["tenant"] == "gamma" and made["key"].startswith("rk_")
    assert (
        raw(
            member, "POST", "/api/v1/jobs", json={"kind": "Job", "name": "j", "command": ["true"]}
        ).status_code
        == 201
    )


def test_keys_are_hashed_shown_once_and_revocable(cloud: Cloud) -> None:
    admin = cloud.tenant("delta")
    made = admin.post("/api/v1/keys", {"role": "member"})
    listed = admin.get("/api/v1/keys")["items"]
    assert all("key" not in k for k in listed)
    assert made["key"] not in str(listed)
    member = Client(cloud.server.url, made["key"])
    assert member.get("/api/v1/jobs")["items"] == []
    admin.delete(f"/api/v1/keys/{made['id']}")
    assert raw(member, "GET", "/api/v1/jobs").status_code == 401


def test_unauthenticated_and_init_once(cloud: Cloud) -> None:
    anonymous = Client(cloud.server.url, "rk_not-a-key")
    assert raw(anonymous, "GET", "/api/v1/jobs").status_code == 401
    assert httpx.get(f"{cloud.server.url}/api/v1/jobs").status_code == 401
    with pytest.raises(UsageError, match="already initialised"):
        Client(cloud.server.url).post("/api/v1/init")


def test_job_token_reaches_only_its_own_job(
    two_tenants: tuple[Cloud, Client, Client, dict[str, str]],
) -> None:
    cloud, alpha, _, _ = two_tenants
    waiting = [sys.executable, "-c", "import time; time.sleep(120)"]
    running = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "runner", "command": waiting})
    wait_until(job_state(alpha, running["id"], "running"), what="the job to run")
    token = cloud.server.app.state.auth.tokens.sign(running["id"])
    job_client = Client(cloud.server.url, token)
    job_client.post(f"/api/v1/jobs/{running['id']}/metrics", {"step": 7, "metrics": {"loss": 1.5}})
    assert alpha.get(f"/api/v1/jobs/{running['id']}")["metrics"] == {"step": 7, "loss": 1.5}
    other = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "other", "command": ["true"]})
    assert raw(job_client, "GET", f"/api/v1/jobs/{other['id']}").status_code == 404
    forged = Client(cloud.server.url, token[:-4] + "0000")
    assert raw(forged, "GET", f"/api/v1/jobs/{running['id']}").status_code == 401
    alpha.post(f"/api/v1/jobs/{running['id']}/stop")


def test_every_list_is_paginated(cloud: Cloud) -> None:
    for name in ("t-a", "t-b", "t-c"):
        cloud.tenant(name)
        cloud.nodes({"name": f"node-{name}", "flavor": "cpu", "chips": 1})
    for path, field in [
        ("/api/v1/tenants", "name"),
        ("/api/v1/nodes", "name"),
        ("/api/v1/keys", "id"),
    ]:
        seen, cursor = [], None
        while True:
            page = cloud.op.get(path, limit=2, cursor=cursor)
            assert len(page["items"]) <= 2
            seen += [item[field] for item in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert len(seen) == len(set(seen)) >= 3, path
        assert seen == sorted(seen), path
