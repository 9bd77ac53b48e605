"""Who is calling: an API key (operator, admin, member) or a job's own token.

Tenant isolation is enforced here and in every query: objects of other tenants are answered
with 404, never 403, so a key cannot even learn that they exist.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from rainier.api.errors import ApiError
from rainier.store.db import Store
from rainier.store.keys import JOB_TOKEN_PREFIX, JobTokens, hash_key
from rainier.store.lifecycle import JobState
from rainier.store.tables import ApiKey, Job, Tenant

Role = Literal["operator", "admin", "member", "job"]
ROLES: tuple[str, ...] = ("operator", "admin", "member")
CACHE_S = 2.0


@dataclass(frozen=True)
class Principal:
    role: Role
    tenant_id: str | None
    tenant: str | None
    key_id: str | None = None
    job_id: str | None = None
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def sees_tenant(self, tenant_id: str | None) -> bool:
        return self.is_operator or (tenant_id is not None and tenant_id == self.tenant_id)


class Authenticator:
    """Resolves bearer secrets, caching API keys briefly so hot paths (submissions) skip the
    database. Job tokens are looked up every time: one is good only while its job has not
    ended, and a job ends at any moment."""

    def __init__(self, store: Store, tokens: JobTokens):
        self.store = store
        self.tokens = tokens
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str) -> tuple[bool, Principal | None]:
        """(hit, principal) without touching the database, so the event loop can ask."""
        hit = self._cache.get(hash_key(secret))
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return True, hit[1]
        return False, None

    def resolve(self, secret: str) -> Principal | None:
        hit, found = self.cached(secret)
        if hit:
            return found
        digest, now = hash_key(secret), time.monotonic()
        principal = self._lookup(secret, digest)
        if secret.startswith(JOB_TOKEN_PREFIX):
            return principal
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def _lookup(self, secret: str, digest: str) -> Principal | None:
        with self.store.read() as s:
            job_id = self.tokens.job_of(secret)
            if job_id is not None:
                job = s.get(Job, job_id)
                if job is None or JobState(job.state).terminal:
                    return None
                tenant = s.get(Tenant, job.tenant_id)
                return Principal(
                    "job", job.tenant_id, tenant.name if tenant else None, job_id=job_id
                )
            key = s.query(ApiKey).filter(ApiKey.key_hash == digest).one_or_none()
            if key is None or key.revoked_at is not None:
                return None
            tenant = s.get(Tenant, key.tenant_id) if key.tenant_id else None
            role: Role = key.role  # type: ignore[assignment]
            return Principal(
                role,
                key.tenant_id,
                tenant.name if tenant else None,
                key_id=key.id,
                rate_limit_rpm=key.rate_limit_rpm,
                rate_limit_tpm=key.rate_limit_tpm,
            )


async def principal(request: Request) -> Principal:
    """Async so that a cached key costs no hop to the thread pool; a miss looks it up there."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
    auth: Authenticator = request.app.state.auth
    secret = secret.strip()
    hit, found = auth.cached(secret)
    if not hit:
        found = await run_in_threadpool(auth.resolve, secret)
    if found is None:
        raise ApiError(401, "invalid or revoked API key")
    return found


Caller = Annotated[Principal, Depends(principal)]


def require(caller: Principal, *roles: str) -> None:
    if caller.role not in roles:
        raise ApiError(
            403, f"this needs one of the roles {', '.join(roles)}; the key is {caller.role}"
        )
