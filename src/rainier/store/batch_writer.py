"""The one way rows are written in batches: job submissions, the gateway's metered usage and
bulk loads of ledger lines all go through `BatchWriter`.

The rules are the same for every user:

* Items are queued; a thread of the writer's own takes everything queued (up to `max_batch`)
  and writes it in ONE transaction (`Store.write`), so a burst costs one BEGIN/COMMIT and one
  turn of the write lock rather than one per item. Items that arrive while a batch is being
  written go into the next one: under load batches grow instead of queueing up.
* `linger_s` holds a batch open a little after its first item, so items arriving a few
  milliseconds apart still share a commit (the gateway's usage rows); 0 writes at once
  (submissions, whose callers wait for the commit).
* An item is acknowledged only when its transaction has committed: `submit` returns a future
  that is resolved then, with what `write` answered for the item, or with the error. When a
  batch fails and `split_on_error` is set, its items are written again one per transaction,
  so one bad item fails alone and the others still commit.
* `close` writes everything queued before it returns; nothing acknowledged, or queued before
  the close, is lost on a clean stop. A put after the close is refused.
* `write_all` runs the same batch function in the caller's thread over an iterable, for bulk
  loads too large to queue item by item (a year of ledger lines): one transaction per `batch`
  items, or one for all.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from itertools import count, islice
from operator import itemgetter
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from rainier.store.db import Store

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger("rainier.store")

# What a batch function is given: the transaction and the batch's items, in the order they
# were queued (a list from the queue, an iterator read once from `write_all`). It answers one
# result per item, or None when items have no result of their own.
WriteBatch = Callable[[Session, Iterable[Item]], Sequence[Result] | None]


class WriterClosed(RuntimeError):
    """An item was put after the writer was closed."""


class BatchWriter(Generic[Item, Result]):
    """Batched inserts on a thread of their own; see the module's docstring for the rules.

    `on_failure` is told of items that failed with no one waiting on them (`put`), so their
    loss is at least logged where an operator looks; `after_batch` runs after each batch that
    committed (a wake-up for whoever acts on the new rows)."""

    def __init__(
        self,
        store: Store,
        write: WriteBatch[Item, Result],
        *,
        name: str,
        max_batch: int = 256,
        linger_s: float = 0.0,
        split_on_error: bool = True,
        on_failure: Callable[[Item, BaseException], None] | None = None,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.store = store
        self.name = name
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.split_on_error = split_on_error
        self._write = write
        self._on_failure = on_failure
        self._after_batch = after_batch
        self._queue: list[tuple[Item, Future[Result | None] | None]] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.pending = 0

    # -- queueing ----------------------------------------------------------------------------

    def put(self, item: Item) -> None:
        """Queues an item no one waits for (its failure goes to `on_failure`)."""
        self._enqueue(item, None)

    def submit(self, item: Item) -> Future[Result | None]:
        """Queues an item; the future is resolved once its transaction committed (or failed)."""
        done: Future[Result | None] = Future()
        self._enqueue(item, done)
        return done

    async def write(self, item: Item) -> Result | None:
        """`submit` for a coroutine: returns once the item is committed, raises its error."""
        return await asyncio.wrap_future(self.submit(item))

    def _enqueue(self, item: Item, done: Future[Result | None] | None) -> None:
        with self._ready:
            if self._closed:
                raise WriterClosed(f"the {self.name} writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._queue.append((item, done))
            self.pending += 1
            if len(self._queue) == 1:
                self._ready.notify()

    def close(self) -> None:
        """Writes what is queued, then stops the thread. Idempotent."""
        with self._ready:
            self._closed = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    # -- writing -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self.linger_s > 0 and self._queue:
                    deadline = time.monotonic() + self.linger_s
                    while (
                        not self._closed
                        and len(self._queue) < self.max_batch
                        and (left := deadline - time.monotonic()) > 0
                    ):
                        self._ready.wait(left)
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                if not batch:
                    return
            try:
                self._write_batch(batch)
            finally:
                with self._ready:
                    self.pending -= len(batch)

    def _write_batch(self, batch: list[tuple[Item, Future[Result | None] | None]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = self._commit(items)
        except Exception as exc:
            if not self.split_on_error or len(batch) == 1:
                for item, done in batch:
                    self._fail(item, done, exc)
                return
            log.warning("a batch of %d failed (%s); writing its items one by one", len(batch), exc)
            for entry in batch:
                self._write_batch([entry])
            return
        for (_, done), result in zip(batch, results, strict=True):
            if done is not None and done.set_running_or_notify_cancel():
                done.set_result(result)
        if self._after_batch is not None:
            try:
                self._after_batch()
            except Exception:
                log.exception("after a batch of the %s writer", self.name)

    def _commit(self, items: Sequence[Item]) -> Sequence[Result | None]:
        with self.store.write() as s:
            results = self._write(s, items)
        if results is None:
            return [None] * len(items)
        if len(results) != len(items):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        return results

    def _fail(self, item: Item, done: Future[Result | None] | None, exc: BaseException) -> None:
        if done is not None:
            if done.set_running_or_notify_cancel():
                done.set_exception(exc)
        elif self._on_failure is not None:
            self._on_failure(item, exc)
        else:
            log.error("the %s writer lost an item: %s", self.name, exc)

    # -- bulk --------------------------------------------------------------------------------

    def write_all(self, items: Iterable[Item], batch: int | None = None) -> int:
        """Writes `items` in the caller's thread, one transaction per `batch` items (all in
        one when None); an error stops the load and leaves only the batches before it
        committed. The batch function reads each batch's items once, as they are made, so a
        load of any size is never held in memory. Returns how many items were written."""
        counter = count()
        # zip stops at the end of `items` before it advances the counter, so the counter holds
        # how many items were taken (plus one per earlier look at it), without a Python call
        # per item.
        source = map(itemgetter(0), zip(items, counter, strict=False))
        taken = looks = 0
        while True:
            chunk = source if batch is None else islice(source, batch)
            with self.store.write() as s:
                self._write(s, chunk)
            before, taken = taken, next(counter) - looks
            looks += 1
            if batch is None or taken - before < batch:
                return taken
