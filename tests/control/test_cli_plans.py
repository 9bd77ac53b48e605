"""`apply --dry-run`, refusals at submission, `quota` and backdated contracts, through the
real CLI against a real server."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from .clikit import rainier
from .conftest import Cloud, job_state, wait_until

SLEEP = f"[{sys.executable}, -c, 'import time; time.sleep(120)']"


def job(name: str, nodes: int, chips: int, extra: str = "") -> str:
    return (
        f"kind: Job\nname: {name}\nflavor: h200\nnodes: {nodes}\nchips_per_node: {chips}\n"
        f"command: {SLEEP}\n{extra}"
    )


def contract(name: str, tenant: str, guaranteed: int, borrow: int | None) -> dict[str, object]:
    now = datetime.now(UTC)
    body: dict[str, object] = {
        "kind": "Contract",
        "name": name,
        "tenant": tenant,
        "term": {"start": (now - timedelta(minutes=1)).isoformat(), "end": "2100-01-01"},
        "committed_usd": "100000",
        "guaranteed_chips": {"h200": guaranteed},
        "discount": "0.25",
    }
    if borrow is not None:
        body["borrow_limit_chips"] = {"h200": borrow}
    return body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dry_run_refusal_and_quota(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.server.url
    cloud.nodes(
        *(
            {"name": f"gpu-{i}", "flavor": "h200", "chips": 8, "labels": {"block": "b1"}}
            for i in (1, 2, 3)
        )
    )
    acme = cloud.tenant("acme")
    filler = cloud.tenant("filler")
    cloud.op.post("/api/v1/contracts", contract("acme-c", "acme", 8, 8))
    cloud.op.post("/api/v1/contracts", contract("filler-c", "filler", 16, 0))
    home = tmp_path / "acme"
    assert acme.key is not None
    assert rainier(url, home, "login", acme.key).returncode == 0

    # fits in the guarantee: 8 chips at 4.50 x 0.75 = 27 USD/hour, 2 hours at most
    out = rainier(
        url,
        home,
        "apply",
        "--dry-run",
        "-f",
        "-",
        stdin=job("fits", 1, 8, "max_duration_s: 7200\n"),
    )
    assert out.returncode == 0, out.stderr
    assert "would run now on gpu-" in out.stdout
    assert "8 h200: 8 guaranteed, 0 borrowed" in out.stdout
    assert "27.00 USD/hour at contract acme-c's rate" in out.stdout and "25% off" in out.stdout
    assert "estimate:  54.00 USD at most (max_duration_s 2 h)" in out.stdout
    assert acme.get("/api/v1/jobs")["items"] == []  # a dry run writes nothing

    # a gang of two nodes borrows the second node's chips: preemptible
    p = acme.post("/api/v1/jobs/plan", doc_of(job("borrows", 2, 8)))
    assert (p["outcome"], p["guaranteed_chips"], p["borrowed_chips"]) == ("runs-now", 8, 8)
    assert Decimal(p["usd_per_hour"]) == Decimal("54")
    out = rainier(url, home, "apply", "--dry-run", "-f", "-", stdin=job("borrows", 2, 8))
    assert "8 guaranteed, 8 borrowed (preemptible" in out.stdout

    # three nodes would borrow 16 of the 8 allowed
    out = rainier(url, home, "apply", "--dry-run", "-f", "-", stdin=job("greedy", 3, 8))
    assert out.returncode == 0
    assert "would wait: over the borrow limit" in out.stdout
    assert "over borrow limit (h200: 0 borrowed of 8 allowed, needs 24 more)" in out.stdout

    # no node has 16 chips: the dry run says so, and the submission is refused with it
    out = rainier(url, home, "apply", "--dry-run", "-f", "-", stdin=job("huge", 1, 16))
    assert out.returncode == 2 and "can never run" in out.stdout
    out = rainier(url, home, "apply", "-f", "-", stdin=job("huge", 1, 16))
    assert out.returncode == 2
    assert "refused: can never fit: no set of schedulable nodes offers 16 h200 chips" in out.stderr
    assert acme.get("/api/v1/jobs")["items"] == []

    # fill the cluster: the filler's guarantee (two nodes) and acme's (one node)
    fill = filler.post(
        "/api/v1/jobs", doc_of(job("fill", 2, 8, "max_duration_s: 3600\n")), idempotent=True
    )
    mine = acme.post(
        "/api/v1/jobs", doc_of(job("mine", 1, 8, "max_duration_s: 1800\n")), idempotent=True
    )
    wait_until(job_state(filler, fill["id"], "running"), 60)
    wait_until(job_state(acme, mine["id"], "running"), 60)
    p = acme.post("/api/v1/jobs/plan", doc_of(job("later", 1, 8)))
    assert p["outcome"] == "reserved" and p["borrowed_chips"] == 8
    at = datetime.fromisoformat(p["reservation_at"])
    expected = datetime.now(UTC) + timedelta(seconds=1800)
    assert abs((at - expected).total_seconds()) < 120  # when acme's own job must end
    out = rainier(url, home, "apply", "--dry-run", "-f", "-", stdin=job("later", 1, 8))
    assert "would wait for a reservation at " in out.stdout

    # quota against what runs
    rows = {
        r["flavor"]: r
        for r in json.loads(rainier(url, home, "quota", "-o", "json").stdout)["items"]
    }
    h200 = rows["h200"]
    assert (h200["contract"], h200["guaranteed_chips"], h200["in_use_chips"]) == ("acme-c", 8, 8)
    assert (h200["borrowed_chips"], h200["borrow_limit_chips"], h200["borrowable_now_chips"]) == (
        0,
        8,
        0,
    )
    assert Decimal(h200["spent_usd"]) + Decimal(h200["remaining_usd"]) == Decimal("100000")
    table = rainier(url, home, "quota").stdout
    assert table.splitlines()[0].split()[:4] == ["CONTRACT", "TENANT", "FLAVOR", "GUARANTEED"]
    assert "acme-c" in table and "filler-c" not in table  # a tenant sees its own
    op_rows = cloud.op.get("/api/v1/quota")["items"]
    assert {(r["contract"], r["in_use_chips"]) for r in op_rows} == {
        ("acme-c", 8),
        ("filler-c", 16),
    }

    acme.post(f"/api/v1/jobs/{mine['id']}/stop")
    wait_until(job_state(acme, mine["id"], "stopped"), 60)
    after = acme.get("/api/v1/quota")["items"][0]
    assert (after["in_use_chips"], after["borrowable_now_chips"]) == (0, 0)  # its node is free,
    # but it is acme's own guarantee, so nothing more is borrowable beyond it


def doc_of(text: str) -> dict[str, object]:
    import yaml

    data: dict[str, object] = yaml.safe_load(text)
    return data


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_backdated_contract_is_refused_unless_asked(cloud: Cloud, tmp_path: Path) -> None:
    url, home = cloud.server.url, tmp_path / "op"
    assert cloud.op.key is not None
    rainier(url, home, "login", cloud.op.key)
    rainier(url, home, "tenant", "create", "acme")
    start = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    doc = (
        "kind: Contract\nname: acme-c\ntenant: acme\n"
        f"term: {{start: {start}, end: 2100-01-01}}\ncommitted_usd: 100000\n"
        "guaranteed_chips: {h200: 2}\ndiscount: 0.5\n"
    )
    out = rainier(url, home, "apply", "-f", "-", stdin=doc)
    assert out.returncode == 2
    assert "term.start" in out.stderr and "is in the past" in out.stderr
    assert "--backdate" in out.stderr and "2 h200 x" in out.stderr
    assert cloud.op.get("/api/v1/contracts")["items"] == []  # nothing was signed
    out = rainier(url, home, "apply", "--dry-run", "-f", "-", stdin=doc)
    assert out.returncode == 0 and "needs --backdate" in out.stdout

    out = rainier(url, home, "apply", "--backdate", "-f", "-", stdin=doc)
    assert out.returncode == 0, out.stderr
    assert "contract acme-c applied" in out.stdout and "backdated: the term began" in out.stdout
    billed = cloud.op.get("/api/v1/contracts/acme-c")
    hours = (datetime.now(UTC) - datetime.fromisoformat(start + "T00:00:00+00:00")).total_seconds()
    assert billed["spec"]["backdate"] is True
    # 2 chips x 2.25 USD/hour since the start
    total = Decimal(out.stdout.split("total ")[-1].split()[0])
    assert abs(total - Decimal(2 * 2.25 * hours / 3600)) < Decimal("1")
    # re-applying the same contract is no new backdating
    again = rainier(url, home, "apply", "-f", "-", stdin=doc)
    assert again.returncode == 0, again.stderr

    # the reservations are billed, and every usage view sums to its total
    tenant = cloud.tenant("acme")

    def billed_usage() -> dict[str, object] | None:
        data: dict[str, object] = tenant.get("/api/v1/usage", by="job")
        return data if Decimal(str(data["total_usd"])) > 0 else None

    wait_until(billed_usage, 120, "reservations billed")
    for by in ("job", "flavor", "model", "day", "kind"):
        data = tenant.get("/api/v1/usage", by=by)
        groups = sum(Decimal(g["amount_usd"]) for g in data["groups"])
        assert groups == Decimal(data["total_usd"]), by
    by_job = tenant.get("/api/v1/usage", by="job")
    assert any(g["group"] == "(reserved h200)" for g in by_job["groups"])
    out = rainier(
        url, tmp_path / "t", "usage", "--by", "job", env={"RAINIER_API_KEY": tenant.key or ""}
    )
    assert "(reserved h200)" in out.stdout
