"""API keys and job tokens: random secrets shown once, stored only as hashes.

A job's tasks authenticate with a token derived from the job id and the server's job token key
(HMAC), so every attempt of a job gets the same token without storing it anywhere. The key is
not in the database: it is `RAINIER_JOB_TOKEN_KEY`, or else the file `job-token.key` under
`RAINIER_HOME`, made on first start, readable by its owner only. Either holds one or more keys
(comma-separated, or one a line): the first signs, all verify, which is how a key is rotated
without failing the tasks that run (see docs/limits.md). A token is accepted only while its job
has not ended; that check is the authenticator's, which reads the job.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from rainier.store.db import Store
from rainier.store.tables import Meta

KEY_PREFIX = "rk_"
JOB_TOKEN_PREFIX = "rj_"
JOB_TOKEN_KEY_ENV = "RAINIER_JOB_TOKEN_KEY"
JOB_TOKEN_KEY_FILE = "job-token.key"
MIN_KEY_BYTES = 32
_SECRET_CACHE: dict[str, bytes] = {}
log = logging.getLogger("rainier.keys")


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


@dataclass(frozen=True)
class JobTokens:
    """Signs and checks job tokens with the server's keys: the first signs, every one verifies."""

    keys: tuple[bytes, ...]

    @classmethod
    def load(cls, home: Path) -> JobTokens:
        text = os.environ.get(JOB_TOKEN_KEY_ENV) or _key_file(home / JOB_TOKEN_KEY_FILE)
        keys = tuple(
            bytes.fromhex(k.strip()) for k in text.replace(",", "\n").splitlines() if k.strip()
        )
        if not keys or any(len(k) < MIN_KEY_BYTES for k in keys):
            raise ValueError(
                f"a job token key is {MIN_KEY_BYTES} bytes or more, written in hex "
                f"(as `python -c 'import secrets; print(secrets.token_hex(32))'` makes)"
            )
        return cls(keys)

    def _mac(self, key: bytes, job_id: str) -> str:
        return hmac.new(key, f"job\x1f{job_id}".encode(), hashlib.sha256).hexdigest()

    def sign(self, job_id: str) -> str:
        return f"{JOB_TOKEN_PREFIX}{job_id}.{self._mac(self.keys[0], job_id)}"

    def job_of(self, token: str) -> str | None:
        """The job a well-signed token names, or None; whether that job still runs is the
        caller's to check."""
        if not token.startswith(JOB_TOKEN_PREFIX) or "." not in token:
            return None
        job_id, _, mac = token[len(JOB_TOKEN_PREFIX) :].rpartition(".")
        good = False
        for key in self.keys:
            good |= hmac.compare_digest(mac, self._mac(key, job_id))
        return job_id if good else None


def _key_file(path: Path) -> str:
    """The key file's text, made with one fresh key (mode 0600) if there is none yet. Written
    aside and linked into place, so servers starting together on one home agree on one key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by others than its owner: chmod 600 it", path)
    return path.read_text()
