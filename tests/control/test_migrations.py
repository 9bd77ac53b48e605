"""Servers starting together on one empty database all come up: migrations take turns."""

from __future__ import annotations

import threading

from sqlalchemy import inspect

from rainier.store.db import Store


def test_concurrent_migrations_on_one_database(database_url: str) -> None:
    stores = [Store(database_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def start(store: Store) -> None:
        barrier.wait()
        try:
            store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert {"jobs", "tenants", "usage_lines"} <= set(inspect(stores[0].engine).get_table_names())
    for store in stores:
        store.dispose()
