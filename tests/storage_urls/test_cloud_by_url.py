"""A control plane whose storage is an S3 URL (moto): a train job checkpoints and exports there,
the registry records the URL, and a deployment's replica downloads the model and answers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from rainier.api.embedded import EmbeddedServer
from rainier.cli.client import Client
from rainier.config import Settings
from rainier.serve.tiny_model import build_tiny_llama
from rainier.storage.access import StorageConfig
from rainier.storage.publish import publish
from rainier.train import checkpoint

from ..control.conftest import job_state, wait_until
from ..s3kit import S3Server

TEXT = "the quick brown fox jumps over the lazy dog; " * 400


@pytest.fixture
def corpus() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="rainier-corpus-"))
    os.chmod(folder, 0o755)
    (folder / "a.txt").write_text(TEXT)
    os.chmod(folder / "a.txt", 0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cloud(s3: S3Server, bucket: str, tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Client]]:
    store = StorageConfig(url=f"s3://{bucket}/cloud", access=s3.access())
    settings = Settings.from_env(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        port=0,
        tick_s=0.05,
        storage=store,
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 2})
        for tenant in ("acme", "zeta"):
            op.post("/api/v1/tenants", {"kind": "Tenant", "name": tenant})
        key = op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
        yield server, Client(server.url, key)
        for dep in op.get("/api/v1/deployments")["items"]:
            op.delete(f"/api/v1/deployments/{dep['id']}")
        wait_until(
            lambda: not op.get("/api/v1/jobs", state=["pending", "running", "stopping"])["items"],
            120,
            "every task to stop",
        )


@pytest.mark.slow
@pytest.mark.timeout(900)  # a training run, then a replica's start, on a machine others share
def test_train_export_register_and_serve_by_url(
    cloud: tuple[EmbeddedServer, Client], s3: S3Server, bucket: str, corpus: Path
) -> None:
    server, acme = cloud
    job = {
        "kind": "Job",
        "name": "tiny-gpt",
        "train": {"data": [str(corpus)], "batch_size": 2, "seq_len": 32, "checkpoint_every": 2,
                  "tokens": 4 * 2 * 32, "seed": 3},
    }  # fmt: skip
    submitted = acme.post("/api/v1/jobs", job)
    done = wait_until(job_state(acme, submitted["id"], "succeeded", "failed"), 300, "training")
    assert done["state"] == "succeeded", acme.get(f"/api/v1/jobs/{done['id']}/logs")
    prefix = f"s3://{bucket}/cloud/acme/jobs/{submitted['id']}"
    assert checkpoint.Remote(f"{prefix}/checkpoints", s3.access()).steps() == [4, 2]
    log = (
        s3.client()
        .get_object(Bucket=bucket, Key=f"cloud/acme/jobs/{submitted['id']}/logs/rank-0.log")["Body"]
        .read()
    )
    assert b'"event": "done"' in log and b'"event": "exported"' in log
    (model,) = acme.get("/api/v1/models")["items"]
    assert (model["name"], model["path"], model["job_id"]) == (
        "tiny-gpt",
        f"{prefix}/export",
        submitted["id"],
    )

    acme.post("/api/v1/deployments", {"kind": "Deployment", "name": "gpt", "model": "tiny-gpt"})
    wait_until(lambda: acme.get("/api/v1/deployments/gpt")["ready_replicas"] >= 1, 300, "a replica")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=acme.key)
    answer = client.completions.create(model="gpt", prompt="the quick", max_tokens=3)
    assert answer.usage is not None and answer.usage.completion_tokens >= 1


def test_the_registry_takes_only_whole_uploads_under_the_tenants_prefix(
    cloud: tuple[EmbeddedServer, Client], s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    _, acme = cloud
    tiny = build_tiny_llama(tmp_path / "tiny")
    mine, theirs = f"s3://{bucket}/cloud/acme/models/tiny", f"s3://{bucket}/cloud/zeta/models/t"
    publish(tiny, mine, s3.access())
    publish(tiny, theirs, s3.access())

    def cut() -> None:
        raise RuntimeError("cut off")

    with pytest.raises(RuntimeError):
        publish(tiny, f"s3://{bucket}/cloud/acme/models/torn", s3.access(), cut)

    registered = acme.post("/api/v1/models", {"name": "tiny", "path": mine + "/"})
    assert registered["path"] == mine
    for path, reason in (
        (theirs, "not a place of this tenant"),
        (f"s3://{bucket}/cloud/acme/models/torn", "not uploaded whole"),
        (f"s3://{bucket}/cloud/acme/../zeta/models/t", "'..'"),
        (f"s3://{bucket}/cloud/acme-not/x", "not a place of this tenant"),
    ):
        response = acme.http.post("/api/v1/models", json={"name": "bad", "path": path})
        assert response.status_code == 422, path
        problem = response.json()["problems"][0]
        assert problem["field"] == "path" and reason in problem["message"], problem
    assert [m["name"] for m in acme.get("/api/v1/models")["items"]] == ["tiny"]


@pytest.mark.slow
def test_a_shared_folder_named_by_file_url_works_the_same_way(tmp_path: Path, corpus: Path) -> None:
    """`file://` storage (a folder every node mounts): a sandboxed task writes into its
    tenant's prefix there itself, and the registry records the URL."""
    shared = tmp_path / "shared"
    settings = Settings.from_env(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        port=0,
        tick_s=0.05,
        storage=StorageConfig(url=f"file://{shared}"),
    )
    with EmbeddedServer(settings) as server:
        op = Client(server.url, Client(server.url).post("/api/v1/init")["key"])
        op.post("/api/v1/nodes", {"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 1})
        op.post("/api/v1/tenants", {"kind": "Tenant", "name": "acme"})
        acme = Client(
            server.url, op.post("/api/v1/keys", {"tenant": "acme", "role": "admin"})["key"]
        )
        job = {
            "kind": "Job",
            "name": "tiny-gpt",
            "train": {"data": [str(corpus)], "batch_size": 2, "seq_len": 32, "steps": 2},
        }
        submitted = acme.post("/api/v1/jobs", job)
        done = wait_until(job_state(acme, submitted["id"], "succeeded", "failed"), 300, "training")
        assert done["state"] == "succeeded", acme.get(f"/api/v1/jobs/{done['id']}/logs")
        (model,) = acme.get("/api/v1/models")["items"]
    prefix = shared / "acme" / "jobs" / submitted["id"]
    assert model["path"] == f"file://{prefix}/export"
    assert (prefix / "checkpoints" / "step-000000002" / "_MANIFEST.json").is_file()
    assert (prefix / "export" / "model.safetensors").is_file()
    assert b'"event": "done"' in (prefix / "logs" / "rank-0.log").read_bytes()
