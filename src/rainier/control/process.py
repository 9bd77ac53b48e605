"""The controller as a part of a process: built the same way inside `rainier server` (the
embedded default, a thread beside the API) and as `rainier controller`, a process of its own
(`RAINIER_CONTROLLER=external` tells the server not to run one).

Out of process, the API's event loop shares its interpreter with no controller thread, so it
needs no shorter GIL switch interval; the controller's own process keeps the default. A
submission's wake-up cannot cross processes, so the external loop finds new work within
`tick_s` (0.2 s) instead of at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import uuid
from dataclasses import dataclass
from typing import IO

from rainier.accounting.meter import Metering
from rainier.config import Settings
from rainier.control.admitting import AdmitHook
from rainier.control.executor import Executor
from rainier.control.flavors import install as install_flavors
from rainier.control.reconciler import Reconciler
from rainier.control.sandbox import IsolationMode
from rainier.store.db import Store

log = logging.getLogger("rainier.controller")
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
    """A stable identity for the controller that owns RAINIER_HOME.

    A controller restarted after a crash takes over its own lease at once instead of waiting
    for it to expire; a second one on the same home gets a fresh identity and waits its turn.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    lock = open(settings.home / "server.lock", "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return f"server-{uuid.uuid4().hex[:12]}", None
    path = settings.home / "server-id"
    if not path.exists():
        path.write_text(f"server-{uuid.uuid4().hex[:12]}")
    return path.read_text().strip(), lock


@dataclass
class Controller:
    """The reconciler's loop and metering's webhook sender, as threads of this process."""

    reconciler: Reconciler
    stop: threading.Event
    lock: IO[str] | None
    thread: threading.Thread | None = None

    @classmethod
    def build(
        cls, store: Store, settings: Settings, on_admit: AdmitHook | None = None
    ) -> Controller:
        holder, lock = holder_identity(settings)
        metering = Metering.from_env(store)
        reconciler = Reconciler(
            store,
            make_executor(settings),
            settings,
            holder=holder,
            on_task_time=metering.on_task_time,
            on_tick=metering.tick,
            on_admit=on_admit,
        )
        stop = threading.Event()
        metering.start_webhooks(stop)
        return cls(reconciler, stop, lock)

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.reconciler.run, args=(self.stop,), daemon=True, name="reconciler"
        )
        self.thread.start()

    def close(self) -> None:
        """Stops the loop, hands the lease on at once and lets go of the executor."""
        self.stop.set()
        if self.thread is not None:
            self.reconciler.wake.set()
            self.thread.join(timeout=10)
        self.reconciler.release_lease()
        self.reconciler.executor.close()
        if self.lock is not None:
            self.lock.close()


def run_controller(settings: Settings) -> None:
    """`rainier controller`: the loop in the foreground until SIGINT or SIGTERM."""
    store = Store(settings.database_url)
    store.migrate()
    install_flavors(store)
    controller = Controller.build(store, settings)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    controller.start()
    log.info("controller %s running", controller.reconciler.holder)
    try:
        done.wait()
    finally:
        controller.close()
        store.dispose()
