"""BatchWriter on a real SQLite store: batches, acknowledgements, errors, and a clean stop."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from rainier.store.batch_writer import BatchWriter, WriterClosed
from rainier.store.db import Store
from rainier.store.tables import TokenUsageRecord

AT = datetime(2026, 1, 1, tzinfo=UTC)


def usage(request_id: str, tokens: int = 1) -> dict[str, object]:
    return {
        "request_id": request_id,
        "tenant_id": "t",
        "deployment_id": "d",
        "deployment": "chat",
        "model": "m",
        "input_tokens": tokens,
        "output_tokens": 0,
        "at": AT,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'rainier.db'}")
    s.migrate()
    yield s
    s.dispose()


def stored(store: Store) -> set[str]:
    with store.read() as s:
        return set(s.scalars(select(TokenUsageRecord.request_id)))


class Recorder:
    """A batch function that inserts the rows, remembers each batch's size, can be held at
    its first batch, and refuses rows whose input_tokens is negative."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()

    def __call__(self, s: Session, rows: Iterable[dict[str, object]]) -> list[int]:
        batch = list(rows)
        self.holding.set()
        assert self.hold.wait(30)
        if any(int(str(r["input_tokens"])) < 0 for r in batch):
            raise ValueError("negative tokens")
        s.execute(insert(TokenUsageRecord), batch)
        self.sizes.append(len(batch))
        return [int(str(r["input_tokens"])) for r in batch]


def test_what_arrives_during_a_write_goes_in_one_next_batch(store: Store) -> None:
    record = Recorder()
    writer: BatchWriter[dict[str, object], int] = BatchWriter(store, record, name="test")
    record.hold.clear()
    first = writer.submit(usage("r0"))
    assert record.holding.wait(30)
    rest = [writer.submit(usage(f"r{i}", i)) for i in range(1, 40)]
    record.hold.set()
    assert [f.result(30) for f in rest] == list(range(1, 40))
    assert first.result(30) == 1
    assert record.sizes == [1, 39]
    assert stored(store) == {f"r{i}" for i in range(40)}
    writer.close()


def test_an_acknowledged_item_is_committed(store: Store) -> None:
    writer: BatchWriter[dict[str, object], int] = BatchWriter(store, Recorder(), name="test")
    done = writer.submit(usage("seen"))
    done.result(30)
    assert "seen" in stored(store), "acknowledged before its commit"
    writer.close()


def test_a_bad_item_fails_alone_and_its_waiter_hears_of_it(store: Store) -> None:
    record = Recorder()
    writer: BatchWriter[dict[str, object], int] = BatchWriter(store, record, name="test")
    record.hold.clear()
    writer.submit(usage("first"))
    assert record.holding.wait(30)
    good = [writer.submit(usage(f"g{i}", i + 1)) for i in range(5)]
    bad = writer.submit(usage("bad", -1))
    record.hold.set()
    with pytest.raises(ValueError, match="negative tokens"):
        bad.result(30)
    assert [f.result(30) for f in good] == [1, 2, 3, 4, 5]
    assert stored(store) == {"first", *(f"g{i}" for i in range(5))}
    writer.close()


def test_without_split_the_whole_batch_fails_and_nothing_of_it_is_written(store: Store) -> None:
    record = Recorder()
    writer: BatchWriter[dict[str, object], int] = BatchWriter(
        store, record, name="test", split_on_error=False
    )
    record.hold.clear()
    writer.submit(usage("first"))
    assert record.holding.wait(30)
    batch = [writer.submit(usage("ok", 1)), writer.submit(usage("bad", -1))]
    record.hold.set()
    for done in batch:
        with pytest.raises(ValueError):
            done.result(30)
    assert stored(store) == {"first"}
    writer.close()


def test_items_nobody_waits_for_are_reported_when_they_fail(store: Store) -> None:
    lost: list[tuple[object, str]] = []
    writer: BatchWriter[dict[str, object], int] = BatchWriter(
        store, Recorder(), name="test", on_failure=lambda item, exc: lost.append((item, str(exc)))
    )
    writer.put(usage("bad", -1))
    writer.put(usage("good", 1))
    writer.close()
    assert lost == [(usage("bad", -1), "negative tokens")]
    assert stored(store) == {"good"}


def test_close_writes_everything_queued_then_refuses_more(store: Store) -> None:
    record = Recorder()
    writer: BatchWriter[dict[str, object], int] = BatchWriter(
        store, record, name="test", linger_s=5.0, max_batch=7
    )
    for i in range(50):
        writer.put(usage(f"q{i}"))
    writer.close()  # well before the linger is over: the close cuts it short
    assert stored(store) == {f"q{i}" for i in range(50)}
    assert writer.pending == 0
    assert max(record.sizes) <= 7
    with pytest.raises(WriterClosed):
        writer.put(usage("late"))


def test_write_all_commits_batch_by_batch_and_stops_at_an_error(store: Store) -> None:
    writer: BatchWriter[dict[str, object], int] = BatchWriter(store, Recorder(), name="bulk")
    assert writer.write_all((usage(f"b{i}") for i in range(25)), batch=10) == 25
    assert len(stored(store)) == 25
    rows = [usage(f"c{i}") for i in range(10)] + [usage("c-bad", -1)]
    with pytest.raises(ValueError):
        writer.write_all(rows, batch=10)
    with store.read() as s:
        count = s.scalar(select(func.count()).where(TokenUsageRecord.request_id.like("c%")))
    assert count == 10, "the batch before the error stays committed, the failed one does not"
