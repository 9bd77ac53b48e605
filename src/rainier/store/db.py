"""Engines and sessions for SQLite (embedded) and PostgreSQL (scale-out), and migrations."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, writer: bool = False) -> Engine:
    """An engine; for SQLite, `writer` engines take the write lock when a transaction begins
    (BEGIN IMMEDIATE), so concurrent writers queue instead of failing on lock upgrade."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=16
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, issue BEGIN: writers then take the lock up front
    # (BEGIN IMMEDIATE) instead of failing on lock upgrade under concurrency.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


MIGRATION_LOCK = 7_411_382_019  # any constant: the advisory lock key of rainier's migrations


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe on every start).

    Servers starting together on one database migrate one at a time: SQLite's write lock
    (writer engines BEGIN IMMEDIATE) or a PostgreSQL advisory lock serialises them, and the
    later ones find the schema current.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class WriteTurns:
    """Writers of one SQLite file take turns here before they BEGIN IMMEDIATE. It orders
    transactions and holds no data: rows written in batches go through
    `rainier.store.batch_writer.BatchWriter`, whose every batch takes one turn here.

    SQLite's own busy handler waits for a held write lock by sleeping in growing steps (up to
    100 ms each), so two writers that collide, say two API workers taking submissions, add tens
    of milliseconds to the loser. A thread lock and an advisory lock on a file beside the
    database queue them instead: the next writer wakes the moment the last one commits.
    """

    def __init__(self, database: Path):
        self._thread = threading.RLock()
        self._depth = 0
        self._path = database.with_name(database.name + ".writers")
        self._file: IO[bytes] | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._thread:
            if self._depth == 0:
                if self._file is None:
                    self._file = open(self._path, "ab")  # noqa: SIM115 - kept for the store's life
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._file is not None:
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        with self._thread:
            if self._file is not None:
                self._file.close()
                self._file = None


class Store:
    """The one way the control plane reaches its database."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url, writer=True)
        self._reader = make_engine(url) if url.startswith("sqlite") else self.engine
        self._writes = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(self._reader, expire_on_commit=False)
        database = self.engine.url.database if self.is_sqlite else None
        self._queue = WriteTurns(Path(database)) if database and database != ":memory:" else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reads() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self.writer_turn(), self._writes() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def writer_turn(self) -> Iterator[None]:
        """Held around a write transaction on SQLite (see WriteTurns); free elsewhere."""
        if self._queue is None:
            yield
            return
        with self._queue.turn():
            yield

    def dispose(self) -> None:
        self.engine.dispose()
        self._reader.dispose()
        if self._queue is not None:
            self._queue.close()
