"""What the store enforces: with IAM on, moto refuses a tenant's key every object outside its
tenant's prefix. moto matches object ARNs, but it does not evaluate the `s3:prefix` condition
on listing (so the policy goes without it here, and a key may list other tenants' object names)
and it names HEAD and ListObjectsV2 after themselves rather than s3:GetObject and s3:ListBucket
(so those names are added)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rainier.storage.access import StorageAccess, StorageConfig
from rainier.storage.iam_policy import tenant_policy
from rainier.storage.publish import publish, read_manifest

from ..s3kit import ADMIN, S3Server


def moto_policy(store: StorageConfig, tenant: str) -> dict[str, Any]:
    policy = tenant_policy(store, tenant, list_condition=False)
    policy["Statement"][0]["Action"].append("s3:HeadObject")
    policy["Statement"][1]["Action"].append("s3:ListObjectsV2")
    return policy


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[S3Server]:
    """A server of its own: turning IAM on is for the whole server."""
    server = S3Server(tmp_path)
    yield server
    server.stop()


def test_a_tenants_key_reaches_only_its_own_prefix(guarded: S3Server, tmp_path: Path) -> None:
    bucket = guarded.new_bucket()
    store = StorageConfig(url=f"s3://{bucket}/cloud", access=guarded.access())
    admin = guarded.user(
        "operator",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        },
    )
    keys = {t: guarded.user(t, moto_policy(store, t)) for t in ("acme", "zeta")}
    store = StorageConfig(
        url=store.url, access=guarded.access(admin), tenant_keys=keys, explicit=True
    )
    guarded.enforce_iam()

    env = store.task_env("acme", "job-1")
    assert env["RAINIER_STORAGE_URL"] == f"s3://{bucket}/cloud/acme"
    assert env["RAINIER_CHECKPOINT_URL"] == f"s3://{bucket}/cloud/acme/jobs/job-1/checkpoints"
    assert env["RAINIER_STORAGE_KEY_ID"] == keys["acme"].key_id != admin.key_id
    acme = StorageAccess.from_env(env)

    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"acme's weights")
    publish(src, f"s3://{bucket}/cloud/acme/models/m", acme)
    assert read_manifest(f"s3://{bucket}/cloud/acme/models/m", acme) is not None

    publish(src, f"s3://{bucket}/cloud/zeta/models/m", store.tenant_access("zeta"))
    with pytest.raises(PermissionError):
        publish(src, f"s3://{bucket}/cloud/zeta/models/evil", acme)
    acme_s3 = guarded.client(credentials=keys["acme"])
    with pytest.raises(ClientError, match="AccessDenied"):
        acme_s3.get_object(Bucket=bucket, Key="cloud/zeta/models/m/w.bin")
    with pytest.raises(ClientError, match="AccessDenied"):
        acme_s3.delete_object(Bucket=bucket, Key="cloud/zeta/models/m/w.bin")
    body = guarded.client(credentials=admin).get_object(
        Bucket=bucket, Key="cloud/zeta/models/m/w.bin"
    )["Body"]
    assert body.read() == b"acme's weights"


def test_without_tenant_keys_a_task_holds_the_control_planes(guarded: S3Server) -> None:
    store = StorageConfig(url="s3://b/cloud", access=guarded.access())
    assert not store.scoped("acme")
    assert guarded.access().credentials == ADMIN
    assert store.task_env("acme", "j")["RAINIER_STORAGE_KEY_ID"] == ADMIN.key_id
    assert StorageConfig.local(Path("/srv/x")).task_env("acme", "j") == {}
