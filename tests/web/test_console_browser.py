"""The console in a real browser: Debian's Chromium, driven by Playwright, against a real
`rainier server` process. Screenshots of the main pages land under tmp/artifacts/console."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from rainier.serve.tiny_model import build_tiny_llama

from .conftest import Cloud, sign_in, wait_until
from .jobkit import gated_job

MINUTE_MS = 60_000
WHY_PENDING = re.compile(r"borrow limit|waiting for")  # the scheduler's reason, not "queued"


@pytest.fixture(scope="module")
def model_dir(cloud: Cloud) -> Path:
    """A tiny random Llama under acme's storage prefix, where acme may register it."""
    return build_tiny_llama(cloud.server.home / "storage" / "acme" / "models" / "tiny-llama")


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def lines_in_usage(page: Any) -> int:
    cells = page.locator("#usage tbody tr td:nth-child(5)").all_inner_texts()
    return sum(int(c) for c in cells if c.strip().isdigit())


def test_sign_in_gives_a_sealed_httponly_cookie_and_sign_out_ends_it(
    cloud: Cloud, browser: Any, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{cloud.url}/jobs?state=running")
    assert "/login" in page.url
    page.fill("input[name=key]", "rk_this-is-not-a-key")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("invalid or revoked API key")
    shot(page, artifacts, "login")

    page.fill("input[name=key]", cloud.acme.key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{cloud.url}/jobs?state=running")  # back where sign-in was asked for
    (cookie,) = [c for c in context.cookies() if c["name"] == "rainier_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert 0 < cookie["expires"] - time.time() <= 8 * 3600 + 60
    assert cloud.acme.key not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # no script of the page can read it
    expect(page.locator("#tenant-name")).to_have_text("acme")

    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.goto(f"{cloud.url}/usage")
    assert "/login" in page.url
    context.close()


def test_a_job_goes_pending_running_succeeded_without_reload(
    cloud: Cloud, browser: Any, artifacts: Path
) -> None:
    page = sign_in(browser, cloud.url, cloud.acme.key)
    page.goto(f"{cloud.url}/jobs")
    page.evaluate("window.stayed = true")  # a reload or navigation would lose it
    blocker_gate, gate = cloud.gates / "blocker", cloud.gates / "train"
    blocker = cloud.acme.post("/api/v1/jobs", gated_job("blocker", blocker_gate, chips=4))
    wait_until(
        lambda: cloud.acme.get(f"/api/v1/jobs/{blocker['id']}")["state"] == "running",
        120,
        "the blocker to run",
    )
    job = cloud.acme.post("/api/v1/jobs", gated_job("train-demo", gate, "training finished"))

    row = page.locator(f"tr[data-job='{job['id']}']")  # appears without a reload
    expect(row.locator(".state")).to_have_text("pending", timeout=MINUTE_MS)
    expect(row.locator(".reason")).to_contain_text(WHY_PENDING, timeout=MINUTE_MS)
    assert page.evaluate("window.stayed === true")
    shot(page, artifacts, "jobs")

    row.locator("a").click()
    page.wait_for_url(f"**/jobs/{job['id']}")
    expect(page.locator("#job-state")).to_have_text("pending")
    expect(page.locator("#job-reason")).to_contain_text(WHY_PENDING)
    page.evaluate("window.stayed = true")
    blocker_gate.touch()
    expect(page.locator("#job-state")).to_have_text("running", timeout=2 * MINUTE_MS)
    gate.touch()
    log = page.locator("#log")
    expect(log).to_contain_text("step 1 loss 6.0", timeout=MINUTE_MS)
    expect(log).to_contain_text("training finished", timeout=MINUTE_MS)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=MINUTE_MS)
    assert page.evaluate("window.stayed === true")

    loss = page.locator("figure[data-title='loss'] polyline")
    expect(loss).to_have_count(1, timeout=MINUTE_MS)
    wait_until(lambda: len(loss.get_attribute("points").split()) == 10, 30, "10 loss points")
    points = [tuple(map(float, p.split(","))) for p in loss.get_attribute("points").split()]
    assert points[0][1] < points[-1][1]  # the loss falls: lower on the page is a larger y
    expect(page.locator("figure[data-title='MFU'] polyline")).to_have_count(1)
    expect(page.locator("figure[data-title='tokens/s'] polyline")).to_have_count(1)
    shot(page, artifacts, "job")
    page.context.close()


@pytest.mark.slow  # a replica starts, loads the model and answers: about half a minute
def test_deploy_a_model_stream_an_answer_and_see_the_bill_move(
    cloud: Cloud, browser: Any, artifacts: Path, model_dir: Path
) -> None:
    cloud.acme.post("/api/v1/models", {"name": "tiny", "path": str(model_dir)})
    page = sign_in(browser, cloud.url, cloud.acme.key)
    page.goto(f"{cloud.url}/usage?by=kind")
    lines_before = lines_in_usage(page)

    page.goto(f"{cloud.url}/deployments")
    page.fill("#deploy input[name=name]", "chat")
    page.select_option("#deploy select[name=model]", "tiny:1")
    page.click("#deploy button[type=submit]")
    page.wait_for_url("**/deployments/chat")
    page.fill("#prompt", "Hello there")
    page.fill("#max-tokens", "16")
    page.click("#send")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-finished", "true", timeout=4 * MINUTE_MS)
    assert "failed" not in (answer.get_attribute("class") or ""), page.inner_text("#chat-status")
    assert answer.inner_text().strip()
    assert int(answer.get_attribute("data-chunks") or 0) >= 2  # it arrived in pieces
    expect(page.locator("#chat-status")).to_contain_text("first token")
    # the gateway timed the answer: the page shows its mean latency, as the API says it
    expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+ ms$"), timeout=MINUTE_MS)
    figures = cloud.acme.get("/api/v1/deployments/chat")["gateway"]
    assert figures["requests"] >= 1 and figures["mean_latency_s"] > 0
    shot(page, artifacts, "playground")

    def moved() -> bool:
        page.goto(f"{cloud.url}/usage?by=kind")
        return lines_in_usage(page) > lines_before and "output_tokens" in page.inner_text("#usage")

    wait_until(moved, 60, "the bill to show the metered tokens")
    shot(page, artifacts, "usage")
    with page.expect_download() as download:
        page.click("#focus-export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows and "BilledCost" in rows[0]
    assert {r.get("ConsumedUnit") or r.get("PricingUnit") for r in rows} - {None}

    page.goto(f"{cloud.url}/")
    expect(page.locator("#chips tbody")).to_contain_text("cpu")
    expect(page.locator(".contract svg polyline").first).to_be_attached()
    shot(page, artifacts, "overview")
    page.context.close()


def test_the_operator_sees_the_fleet_and_the_queue(
    cloud: Cloud, browser: Any, artifacts: Path
) -> None:
    gate = cloud.gates / "held"
    held = cloud.acme.post("/api/v1/jobs", gated_job("held", gate))
    wait_until(
        lambda: cloud.acme.get(f"/api/v1/jobs/{held['id']}")["state"] == "running",
        120,
        "acme's job to run",
    )
    big = cloud.globex.post("/api/v1/jobs", gated_job("needs-all", gate, chips=4))
    try:
        page = sign_in(browser, cloud.url, cloud.op.key)
        assert page.url.endswith("/fleet")
        node = page.locator("#fleet .node[data-node='cpu-a1']")
        expect(page.locator("#fleet")).to_contain_text("zone local-a")
        expect(page.locator("#fleet")).to_contain_text("block b1")
        expect(page.locator("#fleet")).to_contain_text("rack r1")
        expect(node.locator(".holders")).to_contain_text("acme:")
        assert node.locator(".chip.used").count() >= 1
        nodes = {n["name"]: n for n in cloud.op.get("/api/v1/nodes")["items"]}
        isolation = nodes["cpu-a1"]["isolation"]
        assert isolation in ("sandbox", "none")
        expect(node.locator(".isolation")).to_have_attribute("data-isolation", isolation)
        expect(node.locator(".isolation")).to_contain_text(f"tasks: {isolation}")
        shot(page, artifacts, "fleet")

        page.goto(f"{cloud.url}/queue")
        waiting = page.locator("#waiting tbody tr", has_text="needs-all")
        expect(waiting).to_have_count(1)
        expect(waiting).to_contain_text("globex")
        expect(waiting.locator(".reason")).to_contain_text(re.compile("waiting|queued"))
        expect(page.locator("#queue tbody tr", has_text="acme")).to_contain_text("cpu")
        shot(page, artifacts, "queue")

        page.goto(f"{cloud.url}/tenants")
        expect(page.locator("#contracts")).to_contain_text("acme-2026")
        expect(page.locator("#contracts")).to_contain_text("globex-2026")
        shot(page, artifacts, "tenants")
        page.context.close()
    finally:
        cloud.globex.post(f"/api/v1/jobs/{big['id']}/stop")
        gate.touch()


def test_a_second_tenant_sees_none_of_the_first_ones_objects(
    cloud: Cloud, browser: Any, artifacts: Path
) -> None:
    acme_jobs = cloud.acme.get("/api/v1/jobs", limit=1000)["items"]
    assert acme_jobs
    page = sign_in(browser, cloud.url, cloud.globex.key)
    page.goto(f"{cloud.url}/jobs")
    shown = set(page.locator("#job-rows tr[data-job] td:first-child").all_inner_texts())
    assert shown == {j["name"] for j in cloud.globex.get("/api/v1/jobs")["items"]}
    for job in acme_jobs:
        assert page.locator(f"tr[data-job='{job['id']}']").count() == 0
        assert job["id"] not in page.content()
    shot(page, artifacts, "second-tenant-jobs")

    response = page.goto(f"{cloud.url}/jobs/{acme_jobs[0]['id']}")
    assert response is not None and response.status == 404
    expect(page.locator(".error")).to_contain_text("not found")
    logs = page.request.get(f"{cloud.url}/jobs/{acme_jobs[0]['id']}/logs?rank=0&offset=0")
    assert logs.status == 404
    for path, absent in (("/deployments", "chat"), ("/models", "tiny"), ("/", "acme")):
        page.goto(f"{cloud.url}{path}")
        assert absent not in page.inner_text("main")
    assert page.goto(f"{cloud.url}/deployments/chat").status == 404
    assert page.goto(f"{cloud.url}/fleet").status == 403
    page.goto(f"{cloud.url}/keys")
    for key in cloud.op.get("/api/v1/keys", tenant="acme")["items"]:
        assert key["prefix"] not in page.inner_text("main")
    page.context.close()


def test_what_users_type_renders_as_text(cloud: Cloud, browser: Any, artifacts: Path) -> None:
    attack = "<script>alert(1)</script>"
    page = sign_in(browser, cloud.url, cloud.acme.key)
    page.goto(f"{cloud.url}/jobs")
    page.click("#submit summary")
    page.fill("textarea[name=document]", f"name: {attack}\nflavor: cpu\ncommand: echo hi\n")
    page.click("#submit button[type=submit]")
    expect(page.locator("#submit-error")).to_contain_text("name")  # the API's own words
    assert attack in page.input_value("textarea[name=document]")

    job = cloud.acme.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "echo-markup",
            "flavor": "cpu",
            "command": ["python3", "-c", f"print({attack + '<img src=x onerror=alert(2)>'!r})"],
        },
    )
    page.goto(f"{cloud.url}/jobs/{job['id']}")
    expect(page.locator("#log")).to_contain_text(attack, timeout=2 * MINUTE_MS)
    assert page.locator("#log img").count() == 0
    expect(page.locator("pre.spec")).to_contain_text("onerror=alert(2)")

    cloud.op.post("/api/v1/tenants", {"kind": "Tenant", "name": "initech", "display_name": attack})
    operator = sign_in(browser, cloud.url, cloud.op.key)
    operator.goto(f"{cloud.url}/tenants")
    expect(operator.locator("#tenants")).to_contain_text(attack)
    for p in (page, operator):
        assert p.evaluate("document.querySelectorAll('script').length") == 2  # the console's own
        assert p.dialogs == []
        p.context.close()
