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


def test_stop_flags_become_a_stopping_jobs_cause(database_url: str) -> None:
    """Jobs written under the schema with `stop_requested` and `preempting` flags keep their
    meaning: a stop asked for wins, a preempted running job is stopping to be requeued."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from rainier.store.db import MIGRATIONS

    store = Store(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    flags = {
        "j0": ("running", False, True),
        "j1": ("stopping", True, True),
        "j2": ("stopping", False, False),
        "j3": ("running", False, False),
        "j4": ("pending", False, False),
    }
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "90d9c4db41d7")
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :at)"),
            {"at": "2026-01-01"},
        )
        for job_id, (state, requested, preempting) in flags.items():
            conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, name, kind, spec, flavor, nodes,"
                    " chips_per_node, priority, state, reason, attempt, restarts, preemptions,"
                    " stop_requested, preempting, created_at) VALUES (:id, 't', 'n', 'job', '{}',"
                    " 'cpu', 1, 1, 0, :state, '', 0, 0, 0, :requested, :preempting, :at)"
                ),
                {
                    "id": job_id,
                    "state": state,
                    "requested": requested,
                    "preempting": preempting,
                    "at": "2026-01-01",
                },
            )
    store.migrate()
    with store.engine.connect() as conn:
        rows = dict(
            (r.id, (r.state, r.stop_cause))
            for r in conn.execute(text("SELECT id, state, stop_cause FROM jobs"))
        )
        columns = {c["name"] for c in inspect(conn).get_columns("jobs")}
    assert rows == {
        "j0": ("stopping", "preempted"),
        "j1": ("stopping", "requested"),
        "j2": ("stopping", "task-failed"),
        "j3": ("running", None),
        "j4": ("pending", None),
    }
    assert {"stop_requested", "preempting"} & columns == set()
    store.dispose()
