"""The control plane's HTTP server: the REST API, the /v1 gateway and, unless the controller runs
as a process of its own, the reconciler loop."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from rainier import __version__, web
from rainier.api import edge, errors, gateway_routes, openapi
from rainier.api.auth import Authenticator
from rainier.api.routers import (
    contracts,
    deployments,
    flavors,
    jobs,
    models,
    nodes,
    plans,
    system,
    task_network,
    tenants,
    usage,
)
from rainier.api.submissions import SubmissionWriter
from rainier.catalog import DEFAULT_FLAVORS, install_catalog
from rainier.config import Settings
from rainier.control.flavors import install as install_flavors
from rainier.control.metrics import ControlMetrics
from rainier.control.process import Controller
from rainier.store.db import Store
from rainier.store.keys import JobTokens

log = logging.getLogger("rainier.server")


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    store = store or Store(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.migrate()
        install_flavors(store)
        controller = None
        if settings.embedded_controller:
            controller = Controller.build(store, settings, on_admit=app.state.metrics.admitted)
            app.state.reconciler = controller.reconciler
            app.state.wake = controller.reconciler.poke
            controller.start()
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.submissions.close)
            if controller is not None:
                controller.close()
            install_catalog(dict(DEFAULT_FLAVORS))
            store.dispose()

    app = FastAPI(
        title="rainier",
        version=__version__,
        description="An AI compute cloud you run yourself.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.auth = Authenticator(store, JobTokens.load(settings.home))
    app.state.metrics = ControlMetrics(store)
    app.state.reconciler = None
    app.state.wake = _noop
    app.state.submissions = SubmissionWriter(store, lambda: app.state.wake())
    errors.install(app)
    app.add_middleware(gateway_routes.FastPath)
    app.add_middleware(edge.Edge)  # outermost: the body limit holds on the fast path too
    # Routes are matched in order: the hot ones (submissions, the gateway) first.
    routers = (
        jobs,
        gateway_routes,
        system,
        tenants,
        nodes,
        flavors,
        contracts,
        models,
        deployments,
        usage,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(plans.router)
    app.include_router(task_network.router)
    openapi.install(app)
    web.mount(app, settings)  # last: the console's pages never shadow the API's routes
    return app


def _noop(*_: Any) -> None:
    return None


# With the controller embedded, the reconciler, metering and probes are threads of the server
# process; CPython lets a thread that wants the GIL wait up to the switch interval (5 ms by
# default) while another runs Python. A request arriving while the reconciler works would wait
# that long, so the event loop gets the GIL back sooner; the threads' own work barely notices.
# With the controller in a process of its own (RAINIER_CONTROLLER=external) nothing competes.
SWITCH_INTERVAL_S = 0.0005


def _share_the_gil(settings: Settings) -> None:
    if settings.embedded_controller:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


def app_from_env() -> FastAPI:
    """The app of one worker process: settings come from the environment."""
    settings = Settings.from_env()
    _share_the_gil(settings)
    return create_app(settings)


def serve(settings: Settings, workers: int = 1) -> None:
    """Runs the server in the foreground until interrupted.

    With several worker processes each runs a reconciler (unless the controller is external),
    and the lease lets one act.
    """
    import uvicorn

    logging.basicConfig(
        level=os.environ.get("RAINIER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # every HTTP request the control plane makes (a probe of each replica, each second) and
    # each migration step would be a line: the log is for jobs' and deployments' changes
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _share_the_gil(settings)
    options: dict[str, Any] = {"log_level": "warning", "access_log": False}
    if workers > 1:
        os.environ.update(RAINIER_HOST=settings.host, RAINIER_PORT=str(settings.port))
        uvicorn.run(
            "rainier.api.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            timeout_worker_healthcheck=60,  # a worker busy for seconds is not a dead one
            **options,
        )
        return
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **options)
