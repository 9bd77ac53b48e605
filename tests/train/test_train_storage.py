"""Checkpoints and exports by storage URL, against a real S3-protocol server (moto): a run cut
off in the middle of an upload resumes on another node, with an empty disk, from the last
checkpoint uploaded whole, and reaches the weights an uninterrupted run reaches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rainier.storage.cache import fetch_published
from rainier.storage.fs import open_url
from rainier.storage.publish import MANIFEST
from rainier.train import checkpoint

from ..s3kit import S3Server
from .trainkit import Reference, Run, clean_env, run_to_end, train_args


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


def storage_env(s3: S3Server, **extra: str) -> dict[str, str]:
    access = s3.access()
    assert access.credentials is not None
    return clean_env(
        RAINIER_STORAGE_ENDPOINT_URL=s3.endpoint,
        RAINIER_STORAGE_REGION="us-east-1",
        RAINIER_STORAGE_KEY_ID=access.credentials.key_id,
        RAINIER_STORAGE_SECRET_KEY=access.credentials.secret_key,
        **extra,
    )


@pytest.mark.slow
def test_a_run_cut_off_mid_upload_resumes_elsewhere_from_the_last_whole_upload(
    reference: Reference, corpus: Path, data_cache: Path, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/acme/jobs/job-1/checkpoints"
    export_url = f"s3://{bucket}/acme/jobs/job-1/export"
    common = {"checkpoint_every": "4", "keep": "2", "checkpoint_url": url}

    node_a = tmp_path / "node-a"
    args = train_args(corpus, data_cache, checkpoint_dir=str(node_a), **common)
    crashed = Run(args, storage_env(s3, RAINIER_TRAIN_HOLD="upload:12"))
    crashed.wait_for(lambda r: r.get("event") == "hold" and r.get("at") == "upload")
    crashed.proc.kill()
    crashed.proc.wait(timeout=60)

    remote = checkpoint.Remote(url, s3.access())
    assert remote.steps() == [8, 4]
    fs, root = open_url(remote.step_url(12), s3.access())
    assert fs.exists(f"{root}/{checkpoint.STATE_FILE}")  # uploaded, but never published
    assert not fs.exists(f"{root}/{MANIFEST}")

    node_b = tmp_path / "node-b"  # a replacement node: nothing on its disk
    args = train_args(
        corpus,
        data_cache,
        checkpoint_dir=str(node_b),
        export=str(tmp_path / "export"),
        export_url=export_url,
        **common,
    )
    resumed = run_to_end(args, storage_env(s3))
    (start,) = resumed.events("start")
    assert start["step"] == 8
    assert start["resumed_from"] == str(checkpoint.step_dir(node_b, 8))
    assert [r["step"] for r in resumed.steps()] == list(range(9, 17))
    expected = {r["step"]: r["loss"] for r in reference.run.steps()}
    for record in resumed.steps():
        assert abs(record["loss"] - expected[record["step"]]) < 1e-6
    assert remote.steps() == [16, 12]

    (exported,) = resumed.events("exported")
    assert exported["path"] == export_url
    model = fetch_published(export_url, tmp_path / "cache", s3.access())
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    ours = load_file(str(model / "model.safetensors"))
    theirs = load_file(str(reference.export_dir / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-6


def test_training_data_named_by_url_is_fetched(
    corpus: Path, data_cache: Path, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    client = s3.client()
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"acme/datasets/notes/{path.relative_to(corpus)}")
    args = train_args(corpus, tmp_path / "shards", steps=2, checkpoint_dir=str(tmp_path / "c"))
    args[1] = f"s3://{bucket}/acme/datasets/notes/"
    run = run_to_end(args, storage_env(s3, RAINIER_STORAGE_CACHE=str(tmp_path / "cache")))
    assert run.events("done")[0]["step"] == 2
    assert any((tmp_path / "cache").rglob("notes-0.txt"))


def test_a_data_url_that_names_nothing_is_a_usage_error(
    corpus: Path, data_cache: Path, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    args = train_args(corpus, data_cache, steps=2)
    args[1] = f"s3://{bucket}/acme/datasets/missing/"
    run = Run(args, storage_env(s3, RAINIER_STORAGE_CACHE=str(tmp_path / "cache")))
    assert run.finish() == 2
    assert "argument --data: cannot fetch s3://" in run.stderr


class CutOff(Exception):
    pass


def test_the_store_is_the_truth_when_resuming(s3: S3Server, tmp_path: Path) -> None:
    """A checkpoint whose upload was cut off is passed over even on the disk that holds it
    whole, so every node of a gang resumes from the same step."""
    remote = checkpoint.Remote(f"s3://{s3.new_bucket()}/acme/jobs/j/checkpoints", s3.access())
    node_a, node_b = tmp_path / "a", tmp_path / "b"
    checkpoint.save(node_a, 2, {"step": 2, "w": torch.ones(3)}, remote=remote)

    def cut() -> None:
        raise CutOff

    with pytest.raises(CutOff):
        checkpoint.save(
            node_a, 4, {"step": 4, "w": torch.zeros(3)}, remote=remote, before_publish=cut
        )
    assert [c.step for c in checkpoint.complete(node_a)] == [4, 2]
    assert remote.steps() == [2]
    for node in (node_a, node_b):
        found = checkpoint.load_latest(node, remote)
        assert found is not None
        ckpt, state = found
        assert (ckpt.step, state["step"]) == (2, 2) and bool(state["w"].eq(1).all())
    on_disk = checkpoint.load_latest(node_a)  # without the store: the disk's newest
    assert on_disk is not None and on_disk[0].step == 4
