"""The control plane's HTTP server: the REST API, the /v1 gateway and the reconciler loop."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

from fastapi import FastAPI

from rainier import __version__, web
from rainier.api import edge, errors, gateway, openapi
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
from rainier.control.executor import Executor
from rainier.control.flavors import install as install_flavors
from rainier.control.metering import Metering
from rainier.control.metrics import ControlMetrics
from rainier.control.reconciler import Reconciler
from rainier.control.sandbox import IsolationMode
from rainier.store.db import Store
from rainier.store.keys import JobTokens

log = logging.getLogger("rainier.server")
_MODES = tuple(m.value for m in IsolationMode)


def make_executor(settings: Settings) -> Executor:
    isolation = IsolationMode(settings.isolation) if settings.isolation in _MODES else None
    if isolation is None:
        raise ValueError(f"RAINIER_ISOLATION must be one of {', '.join(_MODES)}")
    if settings.executor == "local":
        from rainier.control.local import LocalExecutor

        send = os.environ.get("RAINIER_SEND_TASK_OUTPUT", "0") == "1"
        return LocalExecutor(settings.tasks_dir, isolation, send_output=send)
    if settings.executor == "ray":
        from rainier.control.ray import RayExecutor  # type: ignore[import-not-found]

        executor: Executor = RayExecutor(settings)
        return executor
    raise ValueError(f"RAINIER_EXECUTOR must be 'local' or 'ray', not {settings.executor!r}")


def holder_identity(settings: Settings) -> tuple[str, IO[str] | None]:
    """A stable identity for the server that owns RAINIER_HOME.

    A server restarted after a crash takes over its own lease at once instead of waiting for it
    to expire; a second server on the same home gets a fresh identity and waits its turn.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    lock = open(settings.home / "server.lock", "a+")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return f"server-{uuid.uuid4().hex[:12]}", None
    path = settings.home / "server-id"
    if not path.exists():
        path.write_text(f"server-{uuid.uuid4().hex[:12]}")
    return path.read_text().strip(), lock


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    store = store or Store(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.migrate()
        install_flavors(store)
        stop = threading.Event()
        thread = None
        lock = None
        if settings.reconcile:
            holder, lock = holder_identity(settings)
            executor = make_executor(settings)
            metering = Metering.from_env(store)
            reconciler = Reconciler(
                store,
                executor,
                settings,
                holder=holder,
                on_task_time=metering.on_task_time,
                on_tick=metering.tick,
                on_admit=app.state.metrics.admitted,
            )
            app.state.reconciler = reconciler
            app.state.wake = reconciler.poke
            thread = threading.Thread(target=reconciler.run, args=(stop,), daemon=True)
            thread.start()
            metering.start_webhooks(stop)
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                app.state.reconciler.wake.set()
                thread.join(timeout=10)
                app.state.reconciler.release_lease()
                app.state.reconciler.executor.close()
            if lock is not None:
                lock.close()
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
    app.add_middleware(gateway.FastPath)
    app.add_middleware(edge.Edge)  # outermost: the body limit holds on the fast path too
    # Routes are matched in order: the hot ones (submissions, the gateway) first.
    routers = (
        jobs,
        gateway,
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


# The reconciler, metering and probes are threads of the server process; CPython lets a thread
# that wants the GIL wait up to the switch interval (5 ms by default) while another runs
# Python. A request arriving while the reconciler works would wait that long, so the event loop
# gets the GIL back sooner; the threads' own work barely notices.
SWITCH_INTERVAL_S = 0.0005


def app_from_env() -> FastAPI:
    """The app of one worker process: settings come from the environment."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(Settings.from_env())


def serve(settings: Settings, workers: int = 1) -> None:
    """Runs the server in the foreground until interrupted.

    With several worker processes each runs a reconciler, and the lease lets one act.
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
    sys.setswitchinterval(SWITCH_INTERVAL_S)
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
