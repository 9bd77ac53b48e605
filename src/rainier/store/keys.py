"""API keys and job tokens: random secrets shown once, stored only as hashes.

A job's tasks authenticate with a token derived from the job id and an installation secret
(HMAC), so every attempt of a job gets the same token without storing it anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.exc import IntegrityError

from rainier.store.db import Store
from rainier.store.tables import Meta

KEY_PREFIX = "rk_"
JOB_TOKEN_PREFIX = "rj_"
_SECRET_CACHE: dict[str, bytes] = {}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def installation_secret(store: Store) -> bytes:
    cached = _SECRET_CACHE.get(store.url)
    if cached is not None:
        return cached
    with store.read() as s:
        row = s.get(Meta, "job_token_secret")
    if row is None:
        try:
            with store.write() as s:
                s.add(Meta(key="job_token_secret", value=secrets.token_hex(32)))
        except IntegrityError:
            pass
        with store.read() as s:
            row = s.get(Meta, "job_token_secret")
    assert row is not None
    secret = bytes.fromhex(row.value)
    _SECRET_CACHE[store.url] = secret
    return secret


def job_token(store: Store, job_id: str) -> str:
    mac = hmac.new(installation_secret(store), job_id.encode(), hashlib.sha256).hexdigest()
    return f"{JOB_TOKEN_PREFIX}{job_id}.{mac}"


def job_of_token(store: Store, token: str) -> str | None:
    """The job a valid job token belongs to, or None."""
    if not token.startswith(JOB_TOKEN_PREFIX) or "." not in token:
        return None
    job_id, _, mac = token[len(JOB_TOKEN_PREFIX) :].rpartition(".")
    expected = hmac.new(installation_secret(store), job_id.encode(), hashlib.sha256).hexdigest()
    return job_id if hmac.compare_digest(mac, expected) else None
