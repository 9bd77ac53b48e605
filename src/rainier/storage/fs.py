"""An fsspec filesystem for a storage URL: the local one for `file://`, s3fs for `s3://`."""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

from rainier.storage.access import StorageAccess
from rainier.storage.location import normalize


class StorageError(RuntimeError):
    """The store could not be read or written, or holds something unusable."""


def open_url(url: str, access: StorageAccess | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem `url` lives on and its path there (`/abs/path` or `bucket/key`)."""
    url = normalize(url)
    scheme, _, path = url.partition("://")
    if scheme == "file":
        return fsspec.filesystem("file", auto_mkdir=True), path
    return fsspec.filesystem("s3", **_s3_options(access or StorageAccess())), path


def _s3_options(access: StorageAccess) -> dict[str, Any]:
    """Listings are never cached: whether a manifest exists must be asked of the store each
    time, or a process would go on missing a checkpoint another one finished."""
    options: dict[str, Any] = {"use_listings_cache": False}
    if access.credentials is not None:
        options["key"] = access.credentials.key_id
        options["secret"] = access.credentials.secret_key
    if access.endpoint_url:
        options["endpoint_url"] = access.endpoint_url
    if access.region:
        options["client_kwargs"] = {"region_name": access.region}
    return options


def url_of(fs: AbstractFileSystem, path: str) -> str:
    """The URL of `path` on `fs`, in canonical form."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return normalize("file://" + path)
    return normalize(f"s3://{path}")


def probe(url: str, access: StorageAccess | None = None) -> None:
    """Raises StorageError, saying why, when the store at `url` cannot be used: a bucket that
    does not exist, keys it refuses, an endpoint that does not answer."""
    fs, path = open_url(url, access)
    if normalize(url).startswith("file://"):
        try:
            fs.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc}") from None
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket)
    except FileNotFoundError:
        raise StorageError(f"bucket {bucket!r} does not exist") from None
    except Exception as exc:  # what the SDK raises differs by endpoint, keys and network
        raise StorageError(f"cannot reach {url}: {exc}") from None
