"""Attempts on the console over plain HTTP (no browser needed): forged and stale sessions,
changes without the CSRF token or from another site, revoked keys, roles, redirects off-site."""

from __future__ import annotations

import re

import httpx

from .conftest import Api, Cloud


def signed_in(cloud: Cloud, key: str) -> httpx.Client:
    client = httpx.Client(base_url=cloud.url, timeout=60)
    response = client.post("/login", data={"key": key, "next": "/jobs"})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/jobs"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=28800" in cookie
    return client


def csrf_of(client: httpx.Client, path: str = "/jobs") -> str:
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def test_pages_need_a_session_and_a_forged_one_is_refused(cloud: Cloud) -> None:
    anonymous = httpx.Client(base_url=cloud.url)
    response = anonymous.get("/jobs?state=running")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/jobs%3Fstate%3Drunning"
    client = signed_in(cloud, cloud.acme.key)
    good = client.cookies["rainier_session"]
    flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    for forged in ("garbage", flipped, good[:20]):
        response = httpx.get(f"{cloud.url}/jobs", cookies={"rainier_session": forged})
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert client.get("/jobs").status_code == 200


def test_every_change_needs_this_sites_csrf_token(cloud: Cloud) -> None:
    client = signed_in(cloud, cloud.acme.key)
    doc = "name: csrf-probe\nflavor: cpu\ncommand: echo hi\n"
    refused = client.post("/jobs", data={"document": doc})
    assert refused.status_code == 403
    assert "reload the page" in refused.text
    other = signed_in(cloud, cloud.acme.key)  # another session's token is no good either
    assert client.post("/jobs", data={"document": doc, "csrf": csrf_of(other)}).status_code == 403
    token = csrf_of(client)
    cross = client.post(
        "/jobs", data={"document": doc, "csrf": token}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert cloud.acme.get("/api/v1/jobs", name="csrf-probe")["items"] == []  # nothing written
    for path in ("/logout", "/keys", "/deployments"):
        assert client.post(path, data={"name": "x"}).status_code == 403
    accepted = client.post("/jobs", data={"document": doc, "csrf": token})
    assert accepted.status_code == 303
    assert cloud.acme.get("/api/v1/jobs", name="csrf-probe")["items"]


def test_a_revoked_key_ends_its_sessions(cloud: Cloud) -> None:
    created = cloud.acme.post("/api/v1/keys", {"role": "member", "name": "short-lived"})
    client = signed_in(cloud, created["key"])
    assert client.get("/").status_code == 200
    cloud.acme.http.delete(f"/api/v1/keys/{created['id']}").raise_for_status()
    response = client.get("/")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_roles_decide_what_is_shown_and_allowed(cloud: Cloud) -> None:
    member = Api(cloud.url, cloud.acme.post("/api/v1/keys", {"role": "member"})["key"])
    client = signed_in(cloud, member.key)
    page = client.get("/jobs").text
    assert 'href="/keys"' not in page and 'href="/fleet"' not in page
    keys = client.get("/keys")
    assert keys.status_code == 403 and "you are member" in keys.text
    token = csrf_of(client)
    made = client.post("/keys", data={"csrf": token, "role": "admin", "name": "escalate"})
    assert made.status_code == 403
    assert all(k["name"] != "escalate" for k in cloud.acme.get("/api/v1/keys")["items"])
    for path in ("/fleet", "/queue", "/tenants", "/reports"):
        assert client.get(path).status_code == 403
    operator = signed_in(cloud, cloud.op.key)
    assert operator.get("/fleet").status_code == 200


def test_sign_in_stays_on_this_site(cloud: Cloud) -> None:
    client = httpx.Client(base_url=cloud.url)
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        response = client.post("/login", data={"key": cloud.acme.key, "next": target})
        assert response.headers["location"] == "/"
    cross = client.post(
        "/login", data={"key": cloud.acme.key}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "set-cookie" not in cross.headers


def test_errors_are_the_apis_own_words_never_a_trace(cloud: Cloud) -> None:
    client = signed_in(cloud, cloud.acme.key)
    missing = client.get("/jobs/job-does-not-exist")
    assert missing.status_code == 404
    assert "job &#39;job-does-not-exist&#39; not found" in missing.text
    logs = client.get("/jobs/job-does-not-exist/logs?rank=x")
    assert logs.status_code == 422 and logs.json()["message"].startswith("rank and offset")
    token = csrf_of(client)
    bad = client.post("/jobs", data={"csrf": token, "document": "name: ok\nnodes: 0\n"})
    assert bad.status_code == 422
    assert "nodes" in bad.text and "Traceback" not in bad.text
    unparsable = client.post("/jobs", data={"csrf": token, "document": "name: [unclosed\n"})
    assert unparsable.status_code == 422 and "not valid YAML" in unparsable.text
    headers = client.get("/jobs").headers
    assert "script-src 'self'" in headers["content-security-policy"]


def test_a_new_key_is_shown_once_and_revoked_from_the_page(cloud: Cloud) -> None:
    client = signed_in(cloud, cloud.acme.key)
    made = client.post("/keys", data={"csrf": csrf_of(client), "name": "ci-bot", "role": "member"})
    assert made.status_code == 201
    found = re.search(r'<pre id="new-key">(rk_[^<]+)</pre>', made.text)
    assert found is not None
    key = found.group(1)
    me = httpx.get(f"{cloud.url}/api/v1/whoami", headers={"authorization": f"Bearer {key}"})
    assert me.json()["role"] == "member" and me.json()["tenant"] == "acme"
    assert me.json()["key_id"] == cloud_key_id(cloud, "ci-bot")
    assert key not in client.get("/keys").text  # never again
    revoked = client.post(
        f"/keys/{cloud_key_id(cloud, 'ci-bot')}/revoke", data={"csrf": csrf_of(client)}
    )
    assert revoked.status_code == 303
    assert (
        httpx.get(
            f"{cloud.url}/api/v1/whoami", headers={"authorization": f"Bearer {key}"}
        ).status_code
        == 401
    )


def cloud_key_id(cloud: Cloud, name: str) -> str:
    (key,) = [k for k in cloud.acme.get("/api/v1/keys")["items"] if k["name"] == name]
    return str(key["id"])


def test_simulator_reports_open_for_the_operator_only_and_sandboxed(cloud: Cloud) -> None:
    folder = cloud.server.home / "reports" / "plan-a"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text("<html><body><h1>p95 wait 42 min</h1></body></html>")
    (cloud.server.home / "secret.html").write_text("not a report")
    operator = signed_in(cloud, cloud.op.key)
    listing = operator.get("/reports")
    assert listing.status_code == 200 and 'href="/reports/plan-a"' in listing.text
    report = operator.get("/reports/plan-a")
    assert report.status_code == 200 and "p95 wait 42 min" in report.text
    assert report.headers["content-security-policy"].startswith("sandbox")
    for name in ("..%2Fsecret.html", "%2E%2E", "%2E%2E%2Fsecret.html", "nope"):
        assert operator.get(f"/reports/{name}").status_code == 404
    tenant = signed_in(cloud, cloud.acme.key)
    assert tenant.get("/reports/plan-a").status_code == 403


def test_the_playground_relay_answers_bad_requests_in_words(cloud: Cloud) -> None:
    client = signed_in(cloud, cloud.globex.key)
    token = csrf_of(client)
    headers = {"x-csrf-token": token, "content-type": "application/json"}
    empty = client.post("/deployments/chat/chat", content=b'{"messages": []}', headers=headers)
    assert empty.status_code == 422 and empty.json()["message"].startswith("messages:")
    other = client.post(  # acme's deployment (if any) is not globex's to talk to
        "/deployments/chat/chat",
        content=b'{"messages": [{"role": "user", "content": "hi"}]}',
        headers=headers,
    )
    assert other.status_code == 404 and "not found" in other.json()["message"]
    forged = client.post(
        "/deployments/chat/chat",
        content=b'{"messages": [{"role": "user", "content": "hi"}]}',
        headers={"content-type": "application/json"},
    )
    assert forged.status_code == 403
