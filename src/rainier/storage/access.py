"""Who reaches the store, and with which keys.

The control plane reads its storage settings from its own environment:

    RAINIER_STORAGE_URL           file:///srv/rainier or s3://bucket/prefix (default: the folder
                                  $RAINIER_HOME/storage)
    RAINIER_STORAGE_ENDPOINT_URL  an S3-compatible server (MinIO, Ceph, moto); empty for AWS
    RAINIER_STORAGE_REGION        the S3 region (default: the SDK's)
    RAINIER_STORAGE_KEY_ID        the control plane's own access key ...
    RAINIER_STORAGE_SECRET_KEY    ... and its secret
    RAINIER_STORAGE_TENANT_KEYS   a JSON file {"<tenant>": {"key_id": ..., "secret_key": ...}}:
                                  keys each of which the store lets reach only its tenant's prefix

A task is handed the same variables, built by the launcher rather than copied from the server:
its tenant's prefix as the URL and, where the file above has them, its tenant's keys instead of
the control plane's. Without tenant keys a task holds the control plane's, and tenants' prefixes
are kept apart by the URLs rainier hands out, not by the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rainier.storage.location import StorageUrlError, join, normalize, scheme_of

URL_ENV = "RAINIER_STORAGE_URL"
ENDPOINT_ENV = "RAINIER_STORAGE_ENDPOINT_URL"
REGION_ENV = "RAINIER_STORAGE_REGION"
KEY_ID_ENV = "RAINIER_STORAGE_KEY_ID"
SECRET_ENV = "RAINIER_STORAGE_SECRET_KEY"
TENANT_KEYS_ENV = "RAINIER_STORAGE_TENANT_KEYS"
CHECKPOINT_URL_ENV = "RAINIER_CHECKPOINT_URL"
EXPORT_URL_ENV = "RAINIER_EXPORT_URL"


class StorageConfigError(ValueError):
    """A storage setting that cannot work; the message names the variable."""


@dataclass(frozen=True)
class StoreKey:
    key_id: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class StorageAccess:
    """How one process reaches the store: endpoint, region and keys (None: the SDK's own
    chain, e.g. an instance role)."""

    endpoint_url: str | None = None
    region: str | None = None
    credentials: StoreKey | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageAccess:
        env = os.environ if environ is None else environ
        key_id, secret = env.get(KEY_ID_ENV) or None, env.get(SECRET_ENV) or None
        if (key_id is None) != (secret is None):
            raise StorageConfigError(f"set both {KEY_ID_ENV} and {SECRET_ENV}, or neither")
        return cls(
            endpoint_url=env.get(ENDPOINT_ENV) or None,
            region=env.get(REGION_ENV) or None,
            credentials=StoreKey(key_id, secret) if key_id and secret else None,
        )

    def to_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.endpoint_url:
            env[ENDPOINT_ENV] = self.endpoint_url
        if self.region:
            env[REGION_ENV] = self.region
        if self.credentials is not None:
            env[KEY_ID_ENV] = self.credentials.key_id
            env[SECRET_ENV] = self.credentials.secret_key
        return env


@dataclass(frozen=True)
class StorageConfig:
    """The control plane's store: its root URL, its own access, and tenants' scoped keys.

    `explicit` is False for the default folder under RAINIER_HOME: there every node is this
    machine, so tasks keep writing checkpoints and exports to the shared folders and nothing
    is uploaded."""

    url: str
    access: StorageAccess = StorageAccess()
    tenant_keys: Mapping[str, StoreKey] = field(default_factory=dict)
    explicit: bool = True

    @classmethod
    def local(cls, folder: Path) -> StorageConfig:
        return cls(url=normalize(str(folder)), explicit=False)

    @classmethod
    def from_env(
        cls, default_folder: Path, environ: Mapping[str, str] | None = None
    ) -> StorageConfig:
        env = os.environ if environ is None else environ
        raw = env.get(URL_ENV) or ""
        if not raw:
            return cls.local(default_folder)
        try:
            url = normalize(raw)
        except StorageUrlError as exc:
            raise StorageConfigError(f"{URL_ENV}: {exc}") from None
        access = StorageAccess.from_env(env)
        keys_file = env.get(TENANT_KEYS_ENV) or ""
        tenant_keys = read_tenant_keys(Path(keys_file)) if keys_file else {}
        return cls(url=url, access=access, tenant_keys=tenant_keys)

    @property
    def scheme(self) -> str:
        return scheme_of(self.url)

    def tenant_url(self, tenant: str) -> str:
        return join(self.url, tenant)

    def job_url(self, tenant: str, job_id: str) -> str:
        return join(self.url, tenant, "jobs", job_id)

    def tenant_access(self, tenant: str) -> StorageAccess:
        """What a task of `tenant` is given: its tenant's keys where there are some."""
        keys = self.tenant_keys.get(tenant)
        if keys is None:
            return self.access
        return StorageAccess(self.access.endpoint_url, self.access.region, keys)

    def scoped(self, tenant: str) -> bool:
        """Whether `tenant`'s tasks hold keys of their own rather than the control plane's."""
        return tenant in self.tenant_keys

    def task_env(self, tenant: str, job_id: str) -> dict[str, str]:
        """The variables a task of `tenant`'s job `job_id` reaches storage with; none for the
        default folder, which tasks reach as files."""
        if not self.explicit:
            return {}
        job = self.job_url(tenant, job_id)
        return {
            URL_ENV: self.tenant_url(tenant),
            CHECKPOINT_URL_ENV: join(job, "checkpoints"),
            EXPORT_URL_ENV: join(job, "export"),
            **self.tenant_access(tenant).to_env(),
        }


def read_tenant_keys(path: Path) -> dict[str, StoreKey]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StorageConfigError(f"{TENANT_KEYS_ENV}: cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise StorageConfigError(f"{TENANT_KEYS_ENV}: {path} must hold a JSON object")
    keys: dict[str, StoreKey] = {}
    for tenant, entry in raw.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("key_id"), str)
            and isinstance(entry.get("secret_key"), str)
        ):
            raise StorageConfigError(
                f"{TENANT_KEYS_ENV}: {path}: {tenant!r} needs string key_id and secret_key"
            )
        keys[str(tenant)] = StoreKey(entry["key_id"], entry["secret_key"])
    return keys
