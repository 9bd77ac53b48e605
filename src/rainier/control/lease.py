"""The reconciler's lease: a row whose unexpired holder is the one controller that acts, so
two servers (or a server and a `rainier controller`) on one database never both do."""

from __future__ import annotations

import time

from sqlalchemy.exc import IntegrityError

from rainier.store.db import Store
from rainier.store.tables import Lease

LEASE = "reconciler"


class LeaseKeeper:
    def __init__(self, store: Store, holder: str, lease_s: float):
        self.store = store
        self.holder = holder
        self.lease_s = lease_s
        self._renewed = 0.0

    def hold(self) -> bool:
        """True while this holder holds the lease: renewed once a third of it has passed."""
        now = time.time()
        if now - self._renewed < self.lease_s / 3:
            return True  # our lease runs well beyond now; nobody can have taken it
        with self.store.read() as s:
            held = s.get(Lease, LEASE)
            if held is not None and held.holder != self.holder and held.expires_at >= now:
                return False  # a follower looks without taking the write lock
        try:
            with self.store.write() as s:
                lease = s.get(Lease, LEASE, with_for_update=True)
                if lease is None:
                    s.add(Lease(name=LEASE, holder=self.holder, expires_at=now + self.lease_s))
                elif lease.holder == self.holder or lease.expires_at < now:
                    lease.holder = self.holder
                    lease.expires_at = now + self.lease_s
                else:
                    return False
        except IntegrityError:
            return False
        self._renewed = now
        return True

    def release(self) -> None:
        """Lets another holder take over at once (a clean shutdown)."""
        self._renewed = 0.0
        with self.store.write() as s:
            lease = s.get(Lease, LEASE, with_for_update=True)
            if lease is not None and lease.holder == self.holder:
                lease.expires_at = 0.0
