"""Job submissions written in groups: the API's hot path.

Submissions that arrive while one group is being written wait for the next group, which goes
to the database in one thread-pool hop and one transaction (a group commit). A client still
gets its answer only after its row is committed, so an acknowledged submission survives a crash;
the group only shares the fixed costs (the hop to a thread, BEGIN, COMMIT, the write lock)
that would otherwise dominate a one-row insert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rainier.api.errors import ApiError
from rainier.control.plan import flavor_nodes, never_fits
from rainier.scheduler import Workload
from rainier.store.batch_writer import BatchWriter
from rainier.store.db import Store
from rainier.store.lifecycle import LIVE_JOB_STATES, JobState, holds_its_name
from rainier.store.tables import Job

log = logging.getLogger("rainier.api")
MAX_GROUP = 256


@dataclass
class Written:
    """What became of one submission: its own row, the job an earlier retry created, or a
    refusal (a live job holds the name, the gang never fits) with nothing written."""

    created: bool
    existing: Job | None = None
    refused: ApiError | None = None


class SubmissionWriter:
    """Submissions through a `BatchWriter`: a group is what arrived while the last one was
    written, up to `MAX_GROUP`, in one transaction; a group that fails is written again one
    submission at a time, so one bad row fails alone. `on_written` runs after each group."""

    def __init__(self, store: Store, on_written: Callable[[], None]):
        self.store = store
        table = cast(Table, Job.__table__)
        dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert(table).on_conflict_do_nothing().returning(table.c.id)
        self._writer: BatchWriter[dict[str, Any], Written] = BatchWriter(
            store,
            self._write_group,
            name="submissions",
            max_batch=MAX_GROUP,
            after_batch=on_written,
        )

    async def submit(self, row: dict[str, Any]) -> Written:
        """Returns once `row` is committed, or a retried submission's first job is found."""
        written = await self._writer.write(row)
        assert written is not None
        return written

    def close(self) -> None:
        """Writes what is queued, then stops."""
        self._writer.close()

    def _write_group(self, s: Session, group: Iterable[dict[str, Any]]) -> list[Written]:
        rows = list(group)
        out: list[Written] = []
        conn = s.connection()
        live = _live_names(s, rows)
        shapes: dict[tuple[Any, ...], tuple[str, str] | None] = {}
        for row in rows:
            refused = _refusal(s, row, live, shapes)
            if refused is not None:
                out.append(Written(created=False, refused=refused))
            elif conn.execute(self._insert, row).first() is not None:
                out.append(Written(created=True))
                log.info("job %s (%s) submitted: pending", row["id"], row["name"])
                live[(row["tenant_id"], row["name"])] = (
                    row["id"],
                    JobState.PENDING,
                    row["submit_key"],
                )
            else:
                out.append(Written(created=False, existing=_first_of(s, row)))
        return out


LiveNames = dict[tuple[str, str], tuple[str, str, str | None]]


def _live_names(s: Session, rows: list[dict[str, Any]]) -> LiveNames:
    """(tenant id, name) -> (id, state, idempotency key) of the group's names' live jobs.

    A live job is one that holds its name (`lifecycle.holds_its_name`): pending, running, or
    on its way back to the queue; one stopping for good frees its name, which is how
    `apply --replace` takes it over."""
    names = {r["name"] for r in rows}
    tenants = {r["tenant_id"] for r in rows}
    found = s.execute(
        select(Job.tenant_id, Job.name, Job.id, Job.state, Job.stop_cause, Job.submit_key).where(
            Job.name.in_(names),
            Job.tenant_id.in_(tenants),
            Job.state.in_(LIVE_JOB_STATES),
            Job.kind == "job",
        )
    ).all()
    return {
        (r.tenant_id, r.name): (r.id, r.state, r.submit_key)
        for r in found
        if holds_its_name(r.state, r.stop_cause)
    }


def _refusal(
    s: Session,
    row: dict[str, Any],
    live: LiveNames,
    shapes: dict[tuple[Any, ...], tuple[str, str] | None],
) -> ApiError | None:
    """Why this submission is refused, if it is; `shapes` remembers, for the group, which
    gang shapes never fit (a group's rows are mostly of few shapes)."""
    holder = live.get((row["tenant_id"], row["name"]))
    if holder is not None and (row["submit_key"] is None or holder[2] != row["submit_key"]):
        return ApiError(
            409,
            f"job {row['name']!r} is already {holder[1]} ({holder[0]}): stop it, apply "
            "with --replace (replace=true) to stop it and run this one, or choose another name",
            field="name",
        )
    within = row["spec"].get("within")
    shape = (row["flavor"], row["nodes"], row["chips_per_node"], within)
    if shape not in shapes:
        workload = Workload(
            id=row["id"],
            tenant=row["tenant_id"],
            flavor=row["flavor"],
            nodes=row["nodes"],
            chips_per_node=row["chips_per_node"],
            within=within,
        )
        shapes[shape] = _never_fits(s, workload)
    refusal = shapes[shape]
    return None if refusal is None else ApiError(422, f"refused: {refusal[0]}", field=refusal[1])


def _never_fits(s: Session, workload: Workload) -> tuple[str, str] | None:
    """Why the gang can never run here and which field to change: `chips_per_node` when no node
    of the flavor has that many chips, else `nodes`."""
    nodes = flavor_nodes(s, workload.flavor)
    why = never_fits(s, workload, nodes)
    if why is None:
        return None
    largest = max(n.chips for n in nodes)
    field = "chips_per_node" if workload.chips_per_node > largest else "nodes"
    return f"{why}; the largest {workload.flavor} node has {largest}", field


def _first_of(s: Session, row: dict[str, Any]) -> Job:
    """The job that holds this submission's idempotency key (the only unique column a new
    row can collide on: ids are fresh)."""
    found = s.scalars(
        select(Job).where(Job.tenant_id == row["tenant_id"], Job.submit_key == row["submit_key"])
    ).one_or_none()
    if found is None:
        raise RuntimeError(f"job {row['id']} was not written and no earlier job holds its key")
    s.expunge(found)
    return found
