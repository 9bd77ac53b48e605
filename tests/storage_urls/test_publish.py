"""Atomic upload to a real S3-protocol server (moto): a folder is published whole, with its
manifest last, or not at all; downloads land whole in the node's cache and are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from rainier.storage.cache import fetch_published, fetch_tree
from rainier.storage.fs import StorageError, open_url
from rainier.storage.publish import MANIFEST, publish, read_manifest, remove

from ..s3kit import S3Server


class Interrupted(Exception):
    pass


def folder(root: Path, payload: bytes) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(payload)
    (root / "sub" / "config.json").write_text('{"dim": 8}')
    return root


def test_published_folder_round_trips_through_the_cache(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/acme/models/m1"
    src = folder(tmp_path / "src", b"x" * 300_000)
    manifest = publish(src, url, s3.access())
    assert set(manifest.files) == {"weights.bin", "sub/config.json"}
    assert read_manifest(url, s3.access()) == manifest

    copy = fetch_published(url, tmp_path / "cache", s3.access())
    assert (copy / "weights.bin").read_bytes() == b"x" * 300_000
    assert (copy / "sub" / "config.json").read_text() == '{"dim": 8}'
    assert fetch_published(url, tmp_path / "cache", s3.access()) == copy  # cached

    publish(folder(tmp_path / "v2", b"y" * 10), url, s3.access())
    newer = fetch_published(url, tmp_path / "cache", s3.access())
    assert newer != copy and (newer / "weights.bin").read_bytes() == b"y" * 10


def test_an_upload_cut_off_before_its_manifest_is_never_taken(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/acme/models/torn"
    src = folder(tmp_path / "src", b"z" * 1000)

    def cut() -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        publish(src, url, s3.access(), before_manifest=cut)
    fs, root = open_url(url, s3.access())
    assert fs.exists(f"{root}/weights.bin")  # the data is there ...
    assert read_manifest(url, s3.access()) is None  # ... but it is not published
    with pytest.raises(StorageError, match="no complete upload"):
        fetch_published(url, tmp_path / "cache", s3.access())
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_file_missing_under_a_manifest_unpublishes_the_folder(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/acme/models/m2"
    publish(folder(tmp_path / "src", b"w" * 64), url, s3.access())
    s3.client().delete_object(Bucket=bucket, Key="acme/models/m2/weights.bin")
    assert read_manifest(url, s3.access()) is None


def test_removal_withdraws_the_manifest_and_every_file(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/acme/models/m3"
    publish(folder(tmp_path / "src", b"v"), url, s3.access())
    remove(url, s3.access())
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="acme/models/m3/")
    assert listed.get("KeyCount", 0) == 0
    assert read_manifest(url, s3.access()) is None


def test_a_dataset_uploaded_by_any_client_is_fetched_whole(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    client = s3.client()
    client.put_object(Bucket=bucket, Key="acme/datasets/notes/a.txt", Body=b"alpha " * 100)
    client.put_object(Bucket=bucket, Key="acme/datasets/notes/deep/b.md", Body=b"# beta")
    local = fetch_tree(f"s3://{bucket}/acme/datasets/notes/", tmp_path / "cache", s3.access())
    assert (local / "a.txt").read_bytes() == b"alpha " * 100
    assert (local / "deep" / "b.md").read_text() == "# beta"
    single = fetch_tree(f"s3://{bucket}/acme/datasets/notes/a.txt", tmp_path / "c2", s3.access())
    assert single.name == "a.txt" and single.read_bytes() == b"alpha " * 100
    with pytest.raises(StorageError, match="does not exist"):
        fetch_tree(f"s3://{bucket}/acme/datasets/none/", tmp_path / "c3", s3.access())


def test_the_default_local_folder_publishes_the_same_way(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/storage/acme/models/m"
    publish(folder(tmp_path / "src", b"local"), url)
    assert (tmp_path / "storage" / "acme" / "models" / "m" / MANIFEST).is_file()
    copy = fetch_published(url, tmp_path / "cache")
    assert (copy / "weights.bin").read_bytes() == b"local"


def test_a_server_refuses_to_start_on_a_store_it_cannot_use(s3: S3Server, tmp_path: Path) -> None:
    from rainier.config import ConfigError, Settings, check
    from rainier.storage.access import StorageConfig

    settings = Settings.from_env(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        storage=StorageConfig(url="s3://no-such-bucket/cloud", access=s3.access()),
    )
    with pytest.raises(
        ConfigError, match=r"RAINIER_STORAGE_URL .*bucket 'no-such-bucket' does not"
    ):
        check(settings)
