"""One tenant's documents never stall the control loops for the others: the largest contract
the bounds allow schedules and bills, and rows that predate the bounds are set aside with a
reason instead of failing every pass and every tick."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from rainier.spec import MAX_COMMITTED_USD, MAX_CONTRACT_CHIPS, MAX_WEIGHT, JobSpec
from rainier.store.tables import Contract, Job, Tenant, new_id, utcnow

from .conftest import Cloud, job_state, wait_until

SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]


def _term() -> dict[str, str]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    return {"start": start.isoformat(), "end": (start + timedelta(days=365)).isoformat()}


def contract(name: str, tenant: str, chips: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Contract",
        "name": name,
        "tenant": tenant,
        "term": _term(),
        "committed_usd": "1000",
        "guaranteed_chips": chips,
        **extra,
    }


def job(name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "Job", "name": name, "command": SLEEP, **extra}


def _scene(cloud: Cloud) -> tuple[Any, Any, dict[str, Any]]:
    """alpha runs a job on one of two cpu nodes of a block and has a pending one that needs
    that node back (a preemption); beta has a contract for the trn2 node."""
    cloud.nodes(
        {"name": "c1", "flavor": "cpu", "chips": 2, "labels": {"block": "b0"}},
        {"name": "c2", "flavor": "cpu", "chips": 2, "labels": {"block": "b0"}},
        {"name": "t1", "flavor": "trn2", "chips": 1, "labels": {"block": "b1"}},
    )
    alpha, beta = cloud.tenant("alpha"), cloud.tenant("beta")
    cloud.op.post("/api/v1/contracts", contract("beta-c", "beta", {"trn2": 1}))
    running = alpha.post("/api/v1/jobs", job("holder", chips_per_node=2))
    wait_until(job_state(alpha, running["id"], "running"), what="alpha's first job to run")
    return alpha, beta, running


def _gang(alpha: Any) -> dict[str, Any]:
    spec = job("gang", nodes=2, chips_per_node=2, within="block", priority=50)
    return alpha.post("/api/v1/jobs", {**spec, "may_preempt_own": True})


def test_the_largest_contract_allowed_stalls_no_one(cloud: Cloud) -> None:
    refused = cloud.op.http.post(
        "/api/v1/contracts", json=contract("alpha-c", "alpha", {"cpu": 10**19})
    )
    assert refused.status_code == 422
    assert refused.json()["problems"][0]["field"] == "guaranteed_chips.cpu"
    alpha, beta, _ = _scene(cloud)
    absurd = contract(
        "alpha-c",
        "alpha",
        {"cpu": MAX_CONTRACT_CHIPS},
        borrow_limit_chips={"cpu": MAX_CONTRACT_CHIPS},
        weight=MAX_WEIGHT,
        priority_tier=9,
        committed_usd=str(MAX_COMMITTED_USD),
    )
    cloud.op.post("/api/v1/contracts", absurd)
    _gang(alpha)
    other = beta.post("/api/v1/jobs", job("other", flavor="trn2"))
    wait_until(job_state(beta, other["id"], "running"), what="beta's job to be admitted")
    # and the ledger reserves alpha's chips without a failed tick
    wait_until(
        lambda: (
            "reserved_chip_seconds"
            in {g["group"] for g in alpha.get("/api/v1/usage", by="kind")["groups"]}
        ),
        what="alpha's reservation lines",
    )
    assert cloud.op.get("/api/v1/events", object="alpha-c", kind="billing-failed")["items"] == []


def test_rows_from_before_the_bounds_are_set_aside(cloud: Cloud) -> None:
    """A contract stored before the bounds held 10**19 chips: the pending job the scheduler
    fails on is failed with the error, the others are still scheduled, and billing goes on
    for the other contracts with an event on the bad one."""
    alpha, beta, _ = _scene(cloud)
    cloud.op.post("/api/v1/contracts", contract("alpha-c", "alpha", {"cpu": 4}))
    store = cloud.server.app.state.store
    with store.write() as s:
        row = s.scalars(select(Contract).where(Contract.name == "alpha-c")).one()
        row.spec = {
            **row.spec,
            "guaranteed_chips": {"cpu": 10**19},
            "borrow_limit_chips": {"cpu": 10**19},
        }
    gang = _gang(alpha)
    other = beta.post("/api/v1/jobs", job("other", flavor="trn2"))
    wait_until(job_state(beta, other["id"], "running"), what="beta's job to be admitted")
    failed = wait_until(job_state(alpha, gang["id"], "failed"), what="the gang set aside")
    assert "the scheduler cannot consider this job" in failed["reason"]
    assert [e["kind"] for e in alpha.get(f"/api/v1/jobs/{gang['id']}")["events"]] == ["failed"]
    wait_until(
        lambda: cloud.op.get("/api/v1/events", object="alpha-c", kind="billing-failed")["items"],
        what="the billing failure recorded on the bad contract",
    )
    wait_until(
        lambda: (
            "reserved_chip_seconds"
            in {g["group"] for g in beta.get("/api/v1/usage", by="kind")["groups"]}
        ),
        what="beta's reservation lines",
    )


def test_a_job_exec_cannot_start_fails_instead_of_requeueing(cloud: Cloud) -> None:
    cloud.nodes({"name": "c1", "flavor": "cpu", "chips": 2})
    alpha = cloud.tenant("alpha")
    big = {"BIG": "x" * (128 * 1024)}
    refused = alpha.http.post("/api/v1/jobs", json=job("big", env=big))
    assert refused.status_code == 422 and refused.json()["problems"][0]["field"] == "env"
    # a row stored before the limit held such an environment
    spec = JobSpec.model_validate(job("big", max_restarts=0)).model_dump(mode="json")
    spec["env"] = big
    store = cloud.server.app.state.store
    with store.write() as s:
        owner = s.scalars(select(Tenant).where(Tenant.name == "alpha")).one()
        row = Job(
            id=new_id("job"),
            tenant_id=owner.id,
            name="big",
            kind="job",
            spec=spec,
            flavor="cpu",
            nodes=1,
            chips_per_node=1,
            priority=0,
            state="pending",
            reason="queued",
            created_at=utcnow(),
        )
        s.add(row)
        job_id = row.id
    cloud.server.app.state.wake()
    done = wait_until(job_state(alpha, job_id, "failed", "succeeded"), what="the job to end")
    assert done["state"] == "failed" and "cannot start" in done["reason"], done["reason"]
    assert (done["attempt"], done["restarts"], done["preemptions"]) == (0, 0, 0)


def test_a_gang_no_node_could_hold_is_refused(cloud: Cloud) -> None:
    cloud.nodes({"name": "c1", "flavor": "cpu", "chips": 2})
    alpha = cloud.tenant("alpha")
    wide = alpha.http.post("/api/v1/jobs", json=job("wide", chips_per_node=64))
    assert wide.status_code == 422
    assert wide.json()["problems"][0]["field"] == "chips_per_node"
    assert "largest has 2" in wide.json()["message"]
    many = alpha.http.post("/api/v1/jobs", json=job("many", nodes=3))
    assert many.status_code == 422 and many.json()["problems"][0]["field"] == "nodes"
    assert alpha.get("/api/v1/jobs")["items"] == []
