"""Inside the sandbox the work a tenant came for still works: checkpoints that survive a
preemption, DDP between two ranks, a model trained, exported and then served by a deployment
replica that answers through the gateway."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest

from .conftest import PY, Sealed, finished, logs, needs_sandbox, wait_until

pytestmark = needs_sandbox
NOW = datetime.now(UTC)
TERM = {"start": NOW.isoformat(), "end": (NOW + timedelta(days=365)).isoformat()}

CHECKPOINTING = """
import os, pathlib, signal, sys, time
ckpt = pathlib.Path(os.environ["RAINIER_CHECKPOINT_DIR"])
state = ckpt / "step"
step = int(state.read_text()) if state.exists() else 0
print(f"attempt {os.environ['RAINIER_ATTEMPT']} as uid {os.getuid()} resumes at step {step}", flush=True)
stopping = False
def on_term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term)
while step < 150:  # 7.5 s of work: the preemption comes within a second or two
    time.sleep(0.05)
    step += 1
    tmp = ckpt / "step.tmp"; tmp.write_text(str(step)); tmp.replace(state)
    if stopping:
        print(f"SIGTERM: checkpointed at step {step}", flush=True)
        sys.exit(0)
print("finished", flush=True)
"""


def test_a_preempted_job_resumes_from_its_checkpoint(sealed: Sealed) -> None:
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    owner, borrower = sealed.tenant("owner"), sealed.tenant("borrower")
    # the term began when this module was loaded: moments ago, on purpose
    contract = {"kind": "Contract", "term": TERM, "committed_usd": "100", "backdate": True}
    sealed.op.post(
        "/api/v1/contracts",
        {**contract, "name": "owner-c", "tenant": "owner", "guaranteed_chips": {"cpu": 2}},
    )
    sealed.op.post(
        "/api/v1/contracts",
        {**contract, "name": "borrower-c", "tenant": "borrower", "guaranteed_chips": {}},
    )
    b = borrower.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "borrowing",
            "command": [PY, "-c", CHECKPOINTING],
            "chips_per_node": 2,
        },
    )
    wait_until(lambda: "resumes at step 0" in logs(borrower, b["id"]), what="the borrower")
    step_file = Path(sealed.settings.checkpoints_dir) / b["id"] / "step"
    wait_until(lambda: step_file.exists() and int(step_file.read_text()) > 5, what="checkpoints")
    a = owner.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "owned",
            "command": [PY, "-c", "print('owner ran')"],
            "chips_per_node": 2,
        },
    )
    assert wait_until(finished(owner, a["id"]), 90)["state"] == "succeeded"
    done = wait_until(finished(borrower, b["id"]), 90, "the borrower")
    out = logs(borrower, b["id"])
    assert done["state"] == "succeeded" and done["preemptions"] == 1, out
    checkpointed = int(out.split("SIGTERM: checkpointed at step ")[1].split()[0])
    assert f"resumes at step {checkpointed}" in out and "finished" in out
    uids = {line.split(" as uid ")[1].split()[0] for line in out.splitlines() if " as uid " in line}
    assert len(uids) == 1 and int(uids.pop()) >= 1000  # both attempts ran as the tenant's user


DDP = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} sum {value.item()}", flush=True)
dist.destroy_process_group()
"""


def test_ddp_between_two_sandboxed_ranks(sealed: Sealed) -> None:
    sealed.nodes(
        {"name": "n1", "flavor": "cpu", "chips": 1, "labels": {"block": "b"}},
        {"name": "n2", "flavor": "cpu", "chips": 1, "labels": {"block": "b"}},
    )
    acme = sealed.tenant("acme")
    job = acme.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "ddp", "command": [PY, "-c", DDP], "nodes": 2, "chips_per_node": 1},
    )
    done = wait_until(finished(acme, job["id"]), 120, "the DDP job")
    assert done["state"] == "succeeded", logs(acme, job["id"], 0) + logs(acme, job["id"], 1)
    assert "rank 0 of 2 sum 3.0" in logs(acme, job["id"], 0)
    assert "rank 1 of 2 sum 3.0" in logs(acme, job["id"], 1)


@pytest.fixture
def corpus() -> Iterator[Path]:
    """Training data in a folder the tenant's user may read, as an operator's shared data is."""
    folder = Path(tempfile.mkdtemp(prefix="rainier-corpus-"))
    os.chmod(folder, 0o755)
    (folder / "a.txt").write_text("the quick brown fox jumps over the lazy dog; " * 400)
    os.chmod(folder / "a.txt", 0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_trained_model_is_served_through_the_gateway(sealed: Sealed, corpus: Path) -> None:
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    acme = sealed.tenant("acme")
    train = {"data": [str(corpus)], "steps": 2, "batch_size": 2, "seq_len": 32}
    job = acme.post("/api/v1/jobs", {"kind": "Job", "name": "tiny-gpt", "train": train})
    done = wait_until(finished(acme, job["id"]), 180, "training")
    assert done["state"] == "succeeded", logs(acme, job["id"])
    (model,) = acme.get("/api/v1/models")["items"]
    deployment = {"kind": "Deployment", "name": "chat", "model": model["name"]}
    acme.post("/api/v1/deployments", deployment)
    wait_until(
        lambda: acme.get("/api/v1/deployments/chat")["ready_replicas"] >= 1, 180, "a replica"
    )
    client = openai.OpenAI(base_url=f"{sealed.server.url}/v1", api_key=acme.key)
    answer = client.completions.create(
        model="chat", prompt="the quick", max_tokens=4, temperature=0
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    (replica,) = [
        j for j in acme.get("/api/v1/jobs", state=["running"])["items"] if j["name"] != "tiny-gpt"
    ]
    assert "rainier.serve" in " ".join(replica["spec"]["command"])
    acme.delete(f"/api/v1/deployments/{acme.get('/api/v1/deployments/chat')['id']}")
    wait_until(finished(acme, replica["id"]), 60, "the replica to stop")
