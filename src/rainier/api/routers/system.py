"""Health, metrics and first-start initialisation."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from rainier.api.deps import StoreDep
from rainier.api.errors import conflict
from rainier.api.schemas import InitOut
from rainier.services.tenants import initialise

router = APIRouter()


@router.get("/healthz", tags=["system"])
def healthz(store: StoreDep) -> dict[str, str]:
    with store.read() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics", tags=["system"])
def metrics(request: Request) -> Response:
    """Prometheus exposition: the queue, chips, outcomes and the gateway (see
    `rainier.control.metrics`); `docs/grafana-dashboard.json` charts them."""
    metrics = request.app.state.metrics
    reconciler = request.app.state.reconciler
    if reconciler is not None:
        metrics.ticks.set(reconciler.ticks)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/api/v1/init", tags=["system"], status_code=201)
def init(store: StoreDep) -> InitOut:
    """Creates the first operator key; only once per installation."""
    try:
        with store.write() as s:
            key = initialise(s)
    except IntegrityError:
        raise conflict("already initialised: ask an operator for a key") from None
    return InitOut(key=key, message="operator key: shown once, keep it safe")
