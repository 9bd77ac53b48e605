"""Reclaim, live: a borrower is preempted with SIGTERM, the owner runs, the borrower resumes
from its checkpoint rather than from zero."""

from __future__ import annotations

import sys
from pathlib import Path

from .conftest import Cloud, job_state, wait_until

TERM = {"start": "2026-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}

CHECKPOINTING = """
import os, pathlib, signal, sys, time
ckpt = pathlib.Path(os.environ["RAINIER_CHECKPOINT_DIR"]); ckpt.mkdir(parents=True, exist_ok=True)
state = ckpt / "step"
step = int(state.read_text()) if state.exists() else 0
print(f"attempt {os.environ['RAINIER_ATTEMPT']} resumes at step {step}", flush=True)
stopping = False
def on_term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term)
while step < TOTAL:
    time.sleep(0.05)
    step += 1
    tmp = ckpt / "step.tmp"; tmp.write_text(str(step)); tmp.replace(state)
    if stopping:
        print(f"SIGTERM: checkpointed at step {step}", flush=True)
        sys.exit(0)
print("finished", flush=True)
"""


def test_owner_reclaims_its_guarantee_and_the_borrower_resumes(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.nodes({"name": "n1", "flavor": "cpu", "chips": 4})
    owner, borrower = cloud.tenant("owner"), cloud.tenant("borrower")
    cloud.op.post(
        "/api/v1/contracts",
        {
            "kind": "Contract",
            "name": "owner-c",
            "tenant": "owner",
            "term": TERM,
            "backdate": True,
            "committed_usd": "100",
            "guaranteed_chips": {"cpu": 4},
        },
    )
    cloud.op.post(
        "/api/v1/contracts",
        {
            "kind": "Contract",
            "name": "borrower-c",
            "tenant": "borrower",
            "term": TERM,
            "backdate": True,
            "committed_usd": "100",
            "guaranteed_chips": {},
        },
    )
    # 10 s of work: the preemption comes within a second or two of the owner's job
    code = CHECKPOINTING.replace("TOTAL", "200")
    b = borrower.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "borrowing",
            "command": [sys.executable, "-c", code],
            "chips_per_node": 4,
            "grace_period_s": 30,
        },
    )
    wait_until(
        lambda: "resumes at step 0" in borrower.get(f"/api/v1/jobs/{b['id']}/logs")["data"],
        what="the borrower to run",
    )
    step_file = Path(cloud.settings.checkpoints_dir) / b["id"] / "step"
    wait_until(lambda: step_file.exists() and int(step_file.read_text()) > 5, what="checkpoints")

    a = owner.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "owned",
            "command": [sys.executable, "-c", "print('owner ran')"],
            "chips_per_node": 4,
        },
    )
    requeued = wait_until(
        job_state(borrower, b["id"], "pending"), what="the borrower to be preempted"
    )
    assert requeued["preemptions"] == 1
    logs = borrower.get(f"/api/v1/jobs/{b['id']}/logs")["data"]
    assert "SIGTERM: checkpointed at step" in logs
    checkpointed = int(logs.split("SIGTERM: checkpointed at step ")[1].split()[0])
    assert checkpointed > 5

    done = wait_until(job_state(owner, a["id"], "succeeded", "failed"), what="the owner's job")
    assert done["state"] == "succeeded"
    finished = wait_until(job_state(borrower, b["id"], "succeeded", "failed"), 90, "the borrower")
    assert finished["state"] == "succeeded" and finished["attempt"] == 1
    logs = borrower.get(f"/api/v1/jobs/{b['id']}/logs")["data"]
    assert f"attempt 1 resumes at step {checkpointed}" in logs
    assert logs.count("resumes at step 0") == 1
    events = [e["kind"] for e in finished["events"]]
    assert events.index("preempting") < events.index("requeued")
    owner_detail = owner.get(f"/api/v1/jobs/{a['id']}")
    admitted_at = next(e["at"] for e in owner_detail["events"] if e["kind"] == "admitted")
    requeued_at = next(e["at"] for e in finished["events"] if e["kind"] == "requeued")
    assert admitted_at >= requeued_at  # the owner ran on the chips the borrower gave back
