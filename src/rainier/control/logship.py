"""Sends a task's output from its node to the control plane while it runs, in batches.

The node writes the task's output to a file of its own; a thread follows that file and posts
what was appended, at most `BATCH_BYTES` at a time and every `INTERVAL_S` at least, with the
job's token. Each batch says where in the attempt's output it starts, so a batch retried after
a lost answer is stored once, and the thread resumes from wherever the control plane says it
stopped. When the task ends, `finish` sends the rest before the task's end is reported, so a
job never ends with its output still on the node (unless the control plane stays unreachable
past the deadline: the node's file still holds it then).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx

from rainier.tasklink import ControlPlane

BATCH_BYTES = 256 * 1024
INTERVAL_S = 0.2
FINISH_DEADLINE_S = 30.0
log = logging.getLogger("rainier.logship")


class LogShipper:
    def __init__(self, path: Path, plane: ControlPlane, rank: int, attempt: int):
        self.path, self.plane, self.rank, self.attempt = path, plane, rank, attempt
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rainier-logship", daemon=True)

    def start(self) -> LogShipper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Sends what is left, then stops (without waiting: see `done`)."""
        self._stop.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def finish(self, deadline_s: float = FINISH_DEADLINE_S) -> bool:
        """Sends what is left and stops; True when everything written was sent."""
        self.stop()
        self._thread.join(deadline_s)
        return self.done and self.sent >= self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            sent_any = self._send_once()
            if stopping and not sent_any and self.sent >= self._size():
                return
            if not sent_any:
                self._stop.wait(INTERVAL_S)

    def _send_once(self) -> bool:
        """Sends one batch if there is one; False when there was nothing to send or it failed."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.sent)
                data = fh.read(BATCH_BYTES)
        except FileNotFoundError:
            return False
        if not data:
            return False
        try:
            stored = self.plane.send_log(self.rank, self.attempt, self.sent, data)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 403, 404, 410, 422):
                # the job ended or moved on: nobody will take this output any more
                log.warning("output of rank %d not sent: %s", self.rank, exc.response.text)
                self.sent = self._size()
                return False
            self._stop.wait(INTERVAL_S)
            return False
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.debug("sending output failed (%s); trying again", exc)
            self._stop.wait(INTERVAL_S)
            return False
        moved = stored != self.sent
        self.sent = stored
        return moved
