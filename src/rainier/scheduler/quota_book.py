"""Who holds how many chips of each flavor, against what their contract guarantees.

`committed` counts a tenant's running allocations that are not stopping, plus what this pass
admitted or holds for it. Stopping allocations still occupy nodes (capacity sees them) but are
already leaving, so they no longer count against the tenant.

Fair share of idle chips is weighted DRF: a tenant's dominant share is the largest, over
flavors, of its borrowed chips divided by the flavor's capacity, divided by its weight. The
weight is the contract's `weight`, or by default its guaranteed chips summed over flavors (at
least 1), so that with default weights idle chips are shared in proportion to guarantees. A
tenant with no quota at all is treated as `Quota(tenant)`: no guarantee, may borrow without
limit, weight 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rainier.scheduler.types import Quota


@dataclass(slots=True)
class TenantBook:
    quota: Quota
    weight: float
    committed: dict[str, int] = field(default_factory=dict)

    def guaranteed(self, flavor: str) -> int:
        return self.quota.guaranteed_chips.get(flavor, 0)

    def borrow_limit(self, flavor: str) -> int | None:
        limits = self.quota.borrow_limit_chips
        return None if limits is None else limits.get(flavor, 0)

    def used(self, flavor: str) -> int:
        return self.committed.get(flavor, 0)

    def borrowed(self, flavor: str, extra: int = 0) -> int:
        return max(0, self.used(flavor) + extra - self.guaranteed(flavor))

    def add(self, flavor: str, chips: int) -> None:
        self.committed[flavor] = self.committed.get(flavor, 0) + chips


class QuotaBook:
    def __init__(self, quotas: Iterable[Quota], capacity: Mapping[str, int]) -> None:
        self.capacity = dict(capacity)
        self.books: dict[str, TenantBook] = {}
        for q in quotas:
            self.books[q.tenant] = TenantBook(q, _weight(q))

    def book(self, tenant: str) -> TenantBook:
        book = self.books.get(tenant)
        if book is None:
            q = Quota(tenant)
            book = self.books[tenant] = TenantBook(q, _weight(q))
        return book

    def share_after(self, tenant: str, flavor: str, chips: int) -> float:
        """The tenant's dominant share of borrowed chips if it were given `chips` of `flavor`."""
        book = self.book(tenant)
        share = 0.0
        for f in (*book.committed, flavor):
            cap = self.capacity.get(f, 0)
            if cap > 0:
                share = max(share, book.borrowed(f, chips if f == flavor else 0) / cap)
        return share / book.weight


def _weight(q: Quota) -> float:
    if q.weight is not None and q.weight > 0:
        return float(q.weight)
    return float(max(1, sum(q.guaranteed_chips.values())))
