"""Each tenant's unprivileged uid on the nodes, from the operator's range (`RAINIER_SANDBOX_UIDS`).

A tenant keeps its uid for good: files its tasks wrote (checkpoints, exported models) stay
its own across attempts and restarts. The assignment is two rows of the store's `meta` table,
one keyed by tenant and one by uid, so two control planes can never hand one uid to two
tenants: the second insert of either key fails and the assignment is read back instead.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rainier.store.db import Store
from rainier.store.tables import Meta

TENANT_KEY = "sandbox-uid/tenant/"
UID_KEY = "sandbox-uid/uid/"
DEFAULT_RANGE = (900_000, 999_999)


class UidsExhausted(RuntimeError):
    pass


def parse_range(text: str | None) -> tuple[int, int]:
    """`first-last`, e.g. `900000-999999`; the server's own uid 0 is never in it."""
    if not text:
        return DEFAULT_RANGE
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"RAINIER_SANDBOX_UIDS: expected first-last, got {text!r}") from None
    if lo < 1000 or hi < lo or hi >= 2**32 - 1:
        raise ValueError(f"RAINIER_SANDBOX_UIDS: {text!r} must be a range of uids >= 1000")
    return lo, hi


class TenantUids:
    """Hands out and remembers tenants' uids; cached, since a tenant's uid never changes."""

    def __init__(self, store: Store, uid_range: tuple[int, int] = DEFAULT_RANGE):
        self.store = store
        self.range = uid_range
        self._cache: dict[str, int] = {}

    def uid_of(self, tenant_id: str) -> int:
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        for _ in range(1000):
            found = self._read(tenant_id)
            if found is not None:
                self._cache[tenant_id] = found
                return found
            self._claim(tenant_id)
        raise UidsExhausted("could not assign a sandbox uid")

    def _read(self, tenant_id: str) -> int | None:
        with self.store.read() as s:
            row = s.get(Meta, TENANT_KEY + tenant_id)
            return int(row.value) if row is not None else None

    def _claim(self, tenant_id: str) -> None:
        with self.store.read() as s:
            taken = {
                int(k.removeprefix(UID_KEY))
                for k in s.scalars(select(Meta.key).where(Meta.key.startswith(UID_KEY)))
            }
        lo, hi = self.range
        uid = next((u for u in range(lo, hi + 1) if u not in taken), None)
        if uid is None:
            raise UidsExhausted(f"every uid of RAINIER_SANDBOX_UIDS {lo}-{hi} is taken")
        try:
            with self.store.write() as s:
                s.add(Meta(key=UID_KEY + str(uid), value=tenant_id))
                s.add(Meta(key=TENANT_KEY + tenant_id, value=str(uid)))
        except IntegrityError:
            pass  # another control plane took this uid or assigned this tenant: read again
