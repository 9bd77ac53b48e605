"""The gateway's writer of metered usage: one thread, one transaction per turn."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rainier.gateway")


class UsageWriter:
    """Writes metered usage on a thread of its own, one transaction per turn: what arrives
    while a write is under way goes into the next, so under load writes grow rather than queue
    up. The event loop only appends and notifies; nothing comes back to it, so a request costs
    the loop no thread-pool hop and no wake-up of its own.

    A turn starts `LINGER_S` after the first row it takes: requests answered one after another
    a few milliseconds apart then share a commit, rather than each commit's Python running
    beside the next request and taking the GIL from its event loop. Only the first row of a
    turn wakes the writer."""

    LINGER_S = 0.02

    def __init__(self, write: Callable[[list[dict[str, Any]]], None]) -> None:
        self._write = write
        self._rows: list[dict[str, Any]] = []
        self._ready = threading.Condition()
        self._closed = False
        self.pending = 0
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def put(self, row: dict[str, Any]) -> None:
        with self._ready:
            self._rows.append(row)
            self.pending += 1
            if len(self._rows) == 1:
                self._ready.notify()

    def close(self) -> None:
        """Writes what is queued, then stops."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._rows and not self._closed:
                    self._ready.wait()
                deadline = time.monotonic() + self.LINGER_S
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._ready.wait(left)
                rows, self._rows = self._rows, []
                if not rows:
                    return
            try:
                self._write(rows)
            except Exception:
                for row in rows:
                    log.exception(
                        "cannot record token usage of request %s (%s): %s in, %s out",
                        row["request_id"],
                        row["deployment"],
                        row["input_tokens"],
                        row["output_tokens"],
                    )
            finally:
                with self._ready:
                    self.pending -= len(rows)
