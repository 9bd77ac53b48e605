"""The IAM policy that lets a key reach only one tenant's prefix of an S3 store.

An operator creates one key per tenant (an IAM user, or a MinIO / Ceph user), attaches this
policy, and lists the keys in `RAINIER_STORAGE_TENANT_KEYS`; the launcher then hands each task its
own tenant's key. The store, not rainier, is what refuses a task another tenant's objects.
"""

from __future__ import annotations

from typing import Any

from rainier.storage.access import StorageConfig


def tenant_policy(
    store: StorageConfig, tenant: str, *, list_condition: bool = True
) -> dict[str, Any]:
    """Read, write and delete objects under `<storage>/<tenant>/`; list the bucket only below
    that prefix (`list_condition`; a store that cannot evaluate the `s3:prefix` condition may
    need it off, which lets the key list, though never read, other tenants' object names)."""
    if store.scheme != "s3":
        raise ValueError(f"{store.url} is not an s3:// store")
    bucket, _, key_prefix = store.tenant_url(tenant).removeprefix("s3://").partition("/")
    listing: dict[str, Any] = {
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}"],
    }
    if list_condition:
        listing["Condition"] = {"StringLike": {"s3:prefix": [key_prefix, f"{key_prefix}/*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{key_prefix}/*"],
            },
            listing,
        ],
    }
