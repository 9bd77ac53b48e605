"""Nodes: the provider's machines (operator only; tenants see capacity through contracts)."""

from __future__ import annotations

import os
import socket

from fastapi import APIRouter, Request
from sqlalchemy import select

from rainier.api.auth import Caller, require
from rainier.api.deps import Limit, StoreDep, page_of
from rainier.api.errors import not_found
from rainier.api.schemas import NodeOut, Page
from rainier.services import nodes as service
from rainier.spec import NodeLabels, NodeSpec
from rainier.store.tables import Node

router = APIRouter(prefix="/api/v1", tags=["nodes"])


def _upsert(store: StoreDep, doc: NodeSpec, source: str = "manual") -> NodeOut:
    with store.write() as s:
        return NodeOut.model_validate(service.upsert_node(s, doc, source))


@router.post("/nodes", status_code=201)
def apply_node(doc: NodeSpec, caller: Caller, store: StoreDep, request: Request) -> NodeOut:
    require(caller, "operator")
    out = _upsert(store, doc)
    request.app.state.wake()
    return out


@router.post("/nodes/local", status_code=201)
def register_local(caller: Caller, store: StoreDep, request: Request) -> NodeOut:
    """Registers the server's own machine as a `cpu` node with one chip per core."""
    require(caller, "operator")
    name = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:50].strip("-")
    doc = NodeSpec(
        name=f"local-{name or 'host'}",
        flavor="cpu",
        chips=os.cpu_count() or 1,
        labels=NodeLabels(zone="local", block="local", rack="local"),
    )
    out = _upsert(store, doc, source="local")
    request.app.state.wake()
    return out


@router.get("/nodes")
def list_nodes(
    caller: Caller,
    store: StoreDep,
    request: Request,
    flavor: str | None = None,
    limit: Limit = 1000,
    cursor: str | None = None,
) -> Page[NodeOut]:
    require(caller, "operator")
    with store.read() as s:
        used = service.chips_in_use(s)
        query = select(Node) if flavor is None else select(Node).where(Node.flavor == flavor)
        rows, next_cursor = page_of(s, query, Node.name, limit, cursor)
        items = []
        reconciler = getattr(request.app.state, "reconciler", None)
        isolation = getattr(getattr(reconciler, "executor", None), "isolation", None)
        for (row,) in rows:
            out = NodeOut.model_validate(row)
            out.used_chips = used.get(row.name, 0)
            out.isolation = str(isolation(row.name)) if isolation else "unknown"
            items.append(out)
        return Page(items=items, next_cursor=next_cursor)


@router.delete("/nodes/{name}")
def remove_node(name: str, caller: Caller, store: StoreDep) -> NodeOut:
    require(caller, "operator")
    with store.write() as s:
        row = s.scalars(select(Node).where(Node.name == name)).one_or_none()
        if row is None:
            raise not_found("node", name)
        out = NodeOut.model_validate(row)
        service.remove_node(s, row)
    return out
