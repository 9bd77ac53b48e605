"""Nodes an executor discovers (a Ray cluster's machines) joined to and removed from the
store; manually registered nodes are the operator's and are left alone."""

from __future__ import annotations

from sqlalchemy import select

from rainier.control.executor import Executor
from rainier.control.job_events import job_event
from rainier.store.db import Store
from rainier.store.tables import Node, utcnow


def sync_inventory(store: Store, executor: Executor) -> None:
    found = executor.inventory()
    if found is None:
        return
    seen = {n.name: n for n in found.nodes}
    now = utcnow()
    with store.write() as s:
        rows = {n.name: n for n in s.scalars(select(Node).where(Node.source == executor.name))}
        for name, info in seen.items():
            row = rows.get(name)
            if row is None:
                s.add(
                    Node(
                        id=f"node-{name}",
                        name=name,
                        flavor=info.flavor,
                        chips=info.chips,
                        zone=info.zone,
                        block=info.block,
                        rack=info.rack,
                        address=found.addresses.get(name, ""),
                        source=executor.name,
                        schedulable=True,
                        seen_at=now,
                    )
                )
                message = f"node {name} joined ({info.chips} {info.flavor})"
                job_event(s, f"node-{name}", None, "joined", message)
            else:
                row.seen_at = now
                row.schedulable = True
        for name, row in rows.items():
            if name not in seen:
                job_event(s, row.id, None, "left", f"node {name} left the cluster")
                s.delete(row)
