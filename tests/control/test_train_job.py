"""A `kind: Job` with a `train:` section: the control plane runs rainier's training runtime on
the job's gang, and the model it exports is registered as a new version when the job ends."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings

from .conftest import job_state, wait_until

TEXT = "the quick brown fox jumps over the lazy dog; " * 400


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Client]:
    settings = Settings.from_env(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/db.sqlite", port=0, tick_s=0.05
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 2})
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n2", "flavor": "cpu", "chips": 1})
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
        yield Client(
            server.url, op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
        )


def train_job(corpus: Path, **train: object) -> dict[str, object]:
    section = {"data": [str(corpus)], "batch_size": 2, "seq_len": 32, "checkpoint_every": 2}
    return {"kind": "Job", "name": "tiny-gpt", "train": {**section, **train}}


@pytest.fixture
def corpus() -> Iterator[Path]:
    """Data in a folder the tenant's user may read: a sandboxed task is given no more."""
    folder = Path(tempfile.mkdtemp(prefix="rainier-corpus-"))
    os.chmod(folder, 0o755)
    (folder / "a.txt").write_text(TEXT)
    os.chmod(folder / "a.txt", 0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_train_job_trains_and_registers_its_model(tenant: Client, corpus: Path) -> None:
    submitted = tenant.post("/api/v1/jobs", train_job(corpus, tokens=4 * 2 * 32, seed=3))
    assert submitted["spec"]["train"]["tokens"] == 256
    done = wait_until(job_state(tenant, submitted["id"], "succeeded", "failed"), 120, "training")
    assert done["state"] == "succeeded", tenant.get(f"/api/v1/jobs/{done['id']}/logs")
    assert done["metrics"]["step"] == 4  # 256 tokens at 2 x 32 a step
    (model,) = tenant.get("/api/v1/models")["items"]
    assert (model["name"], model["version"]) == ("tiny-gpt", 1)
    assert (Path(model["path"]) / "config.json").is_file()
    assert (Path(model["path"]) / "model.safetensors").is_file()


def test_a_two_node_job_meets_where_rank_0_registered_and_trains_over_gloo(
    tenant: Client, corpus: Path
) -> None:
    job = {**train_job(corpus, tokens=2 * 2 * 2 * 32, seed=3), "nodes": 2, "chips_per_node": 1}
    submitted = tenant.post("/api/v1/jobs", job)
    done = wait_until(job_state(tenant, submitted["id"], "succeeded", "failed"), 180, "training")
    logs = [tenant.get(f"/api/v1/jobs/{done['id']}/logs", rank=r)["data"] for r in (0, 1)]
    assert done["state"] == "succeeded", logs
    assert done["metrics"]["step"] == 2  # 256 tokens at 2 ranks x 2 x 32 a step
    met = tenant.get(f"/api/v1/jobs/{done['id']}/endpoints/rendezvous", rank=0)
    assert (met["attempt"], met["host"]) == (0, "127.0.0.1")
    assert 0 < met["port"] < 65536
    assert "placement" in done and "master_port" not in str(done["placement"])


def test_a_wrong_train_section_is_refused_and_nothing_is_stored(
    tenant: Client, tmp_path: Path
) -> None:
    with pytest.raises(click.ClickException, match=r"train: overrides"):
        tenant.post("/api/v1/jobs", train_job(tmp_path, steps=2, overrides={"layers": 2}))
    assert tenant.get("/api/v1/jobs")["items"] == []
