"""Storage URLs in one canonical form, so that "is this under that tenant's prefix" is a plain
string comparison that `..`, doubled slashes or a trailing slash cannot fool.

Two schemes: `file:///absolute/path` (a plain absolute path means the same) and
`s3://bucket/key/prefix` (AWS S3 or any server that speaks its protocol: MinIO, Ceph).
"""

from __future__ import annotations

import os

SCHEMES = ("file", "s3")


class StorageUrlError(ValueError):
    """A URL rainier cannot use as storage; the message says why."""


def is_url(text: str) -> bool:
    """Whether `text` names storage by URL rather than a path of this machine."""
    return "://" in text


def normalize(url: str) -> str:
    """`scheme://path` without empty, `.` or trailing segments; `..` is refused rather than
    resolved, since a URL that climbs out of a prefix is never meant."""
    if not is_url(url):
        if not os.path.isabs(url):
            raise StorageUrlError(f"{url!r} is neither a storage URL nor an absolute path")
        url = "file://" + url
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise StorageUrlError(
            f"{url!r}: storage scheme {scheme!r} is not one of {', '.join(SCHEMES)}"
        )
    if "\0" in rest or "\\" in rest:
        raise StorageUrlError(f"{url!r}: a storage URL has no NUL or backslash")
    if scheme == "file" and not rest.startswith("/"):
        raise StorageUrlError(f"{url!r}: a file URL names an absolute path (file:///...)")
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StorageUrlError(f"{url!r}: a storage URL may not contain '..'")
    if scheme == "s3" and not parts:
        raise StorageUrlError(f"{url!r}: an s3 URL names a bucket (s3://bucket/prefix)")
    lead = "/" if scheme == "file" else ""
    return f"{scheme}://{lead}{'/'.join(parts)}"


def join(url: str, *parts: str) -> str:
    """`url` with `parts` below it; each part may hold slashes but never climbs out."""
    base = normalize(url)
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    if not tail:
        return base
    joined = normalize(f"{base.rstrip('/')}/{tail}")
    if not is_within(joined, base) or joined == base:
        raise StorageUrlError(f"{'/'.join(parts)!r} is not a path below {base}")
    return joined


def is_within(url: str, prefix: str) -> bool:
    """Whether `url` is `prefix` or lies below it; both are normalised first."""
    url, prefix = normalize(url), normalize(prefix)
    return url == prefix or url.startswith(prefix.rstrip("/") + "/")


def relative(url: str, prefix: str) -> str:
    """The part of `url` below `prefix` (`""` for the prefix itself)."""
    url, prefix = normalize(url), normalize(prefix)
    if not is_within(url, prefix):
        raise StorageUrlError(f"{url} is not below {prefix}")
    return url[len(prefix) :].lstrip("/")


def scheme_of(url: str) -> str:
    return normalize(url).partition("://")[0]


def basename(url: str) -> str:
    return normalize(url).rstrip("/").rsplit("/", 1)[-1]
