"""Nodes an operator registers by hand (or the server's own machine)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from rainier.spec import NodeSpec
from rainier.store.lifecycle import PLACED_JOB_STATES
from rainier.store.tables import Job, Node, new_id


def upsert_node(s: Session, doc: NodeSpec, source: str = "manual") -> Node:
    """Registers the node, or updates the one of that name; either way it takes work again."""
    row = s.scalars(select(Node).where(Node.name == doc.name)).one_or_none()
    if row is None:
        row = Node(id=new_id("node"), name=doc.name, source=source)
        s.add(row)
    row.flavor, row.chips, row.address = doc.flavor, doc.chips, doc.address
    row.zone, row.block, row.rack = doc.labels.zone, doc.labels.block, doc.labels.rack
    row.schedulable = True
    s.flush()
    return row


def remove_node(s: Session, row: Node) -> None:
    s.delete(row)


def chips_in_use(s: Session) -> dict[str, int]:
    """Chips each node's placed jobs hold (running, or stopping and not yet gone)."""
    used: dict[str, int] = {}
    rows = s.execute(
        select(Job.placement, Job.chips_per_node).where(Job.state.in_(PLACED_JOB_STATES))
    )
    for placement, chips in rows:
        for name in (placement or {}).get("nodes", []):
            used[name] = used.get(name, 0) + chips
    return used
