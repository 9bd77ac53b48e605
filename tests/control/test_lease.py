"""Two servers on one database: only the lease holder's reconciler acts."""

from __future__ import annotations

import time
from pathlib import Path

from rainier.config import Settings
from rainier.control.local import LocalExecutor
from rainier.control.reconciler import Reconciler
from rainier.store.db import Store
from rainier.store.tables import Job, Node, Tenant, new_id

from .conftest import wait_until

# Long enough that a whole tick (a first scheduling pass, starting a task) fits inside it on a
# slow database: a lease that expires while its holder still ticks is taken over, rightly.
LEASE_S = 3.0


def test_only_the_lease_holder_acts(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    settings = Settings.from_env(home=tmp_path, database_url=database_url, lease_s=LEASE_S)
    a = Reconciler(store, LocalExecutor(tmp_path / "a"), settings, holder="a")
    b = Reconciler(store, LocalExecutor(tmp_path / "b"), settings, holder="b")
    with store.write() as s:
        s.add(
            Node(
                id="n", name="n1", flavor="cpu", chips=4, zone="z", block="b", rack="r", address="x"
            )
        )
        s.add(Tenant(id="t", name="acme"))
        s.flush()
        s.add(
            Job(
                id=new_id("job"),
                tenant_id="t",
                name="j",
                spec={"command": ["true"]},
                flavor="cpu",
                nodes=1,
                chips_per_node=1,
                priority=0,
            )
        )
    assert a.tick().leader
    assert not b.tick().leader
    assert a.tick().leader  # renewing its own lease
    with store.read() as s:
        assert s.query(Job).one().state in ("running", "succeeded")
    deadline = time.monotonic() + LEASE_S + 0.1
    wait_until(lambda: time.monotonic() > deadline)
    assert b.tick().leader  # a stopped renewing: b takes over
    assert not a.tick().leader
    b.release_lease()
    assert a.tick().leader  # a released lease is free at once
    store.dispose()
