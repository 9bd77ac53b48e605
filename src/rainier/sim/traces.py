"""rainier's trace format: one CSV row per job submission.

Required columns: submit_s, tenant, flavor, nodes, chips_per_node, duration_s.
Optional: priority (0), kind (job), checkpoint_interval_s (empty: never checkpoints),
max_duration_s (the user's time limit, empty: none), grace_period_s (30), preemptible (true), id.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from rainier.sim.errors import SimInputError
from rainier.sim.model import Trace, TraceJob

REQUIRED = ("submit_s", "tenant", "flavor", "nodes", "chips_per_node", "duration_s")
COLUMNS = (
    *REQUIRED,
    "priority",
    "kind",
    "checkpoint_interval_s",
    "max_duration_s",
    "grace_period_s",
    "preemptible",
    "id",
)
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class _Row:
    def __init__(self, source: str, line: int, row: dict[str, Any]):
        self.source, self.line, self.row = source, line, row

    def error(self, column: str, message: str) -> SimInputError:
        return SimInputError(f"{self.source} line {self.line}: {column}: {message}")

    def text(self, column: str, default: str = "") -> str:
        value = self.row.get(column)
        return default if value is None else str(value).strip()

    def number(self, column: str, minimum: float = 0.0, optional: bool = False) -> float | None:
        raw = self.text(column)
        if raw == "":
            if optional:
                return None
            raise self.error(column, "missing value")
        try:
            value = float(raw)
        except ValueError:
            raise self.error(column, f"{raw!r} is not a number") from None
        if not math.isfinite(value) or value < minimum:
            raise self.error(column, f"must be a finite number >= {minimum:g}; got {raw!r}")
        return value

    def integer(self, column: str, minimum: int, default: int | None = None) -> int:
        raw = self.text(column)
        if raw == "" and default is not None:
            return default
        try:
            value = int(float(raw))
        except ValueError:
            raise self.error(column, f"{raw!r} is not an integer") from None
        if value != float(raw) or value < minimum:
            raise self.error(column, f"must be an integer >= {minimum}; got {raw!r}")
        return value


def _job(r: _Row, index: int, flavors: set[str] | None) -> TraceJob:
    tenant = r.text("tenant")
    if not tenant:
        raise r.error("tenant", "missing value")
    flavor = r.text("flavor")
    if flavors is not None and flavor not in flavors:
        raise r.error("flavor", f"{flavor!r} is not a flavor of the cluster")
    kind = r.text("kind", "job") or "job"
    if kind not in ("job", "replica"):
        raise r.error("kind", f"must be 'job' or 'replica'; got {kind!r}")
    preemptible = r.text("preemptible", "true").lower() or "true"
    if preemptible not in _TRUE | _FALSE:
        raise r.error("preemptible", f"must be true or false; got {preemptible!r}")
    checkpoint = r.number("checkpoint_interval_s", optional=True)
    max_duration = r.number("max_duration_s", optional=True)
    grace = r.number("grace_period_s", optional=True)
    return TraceJob(
        id=r.text("id") or f"j{index}",
        submit_s=r.number("submit_s") or 0.0,
        tenant=tenant,
        flavor=flavor,
        nodes=r.integer("nodes", 1),
        chips_per_node=r.integer("chips_per_node", 1),
        duration_s=r.number("duration_s") or 0.0,
        priority=r.integer("priority", -(10**9), default=0),
        kind="replica" if kind == "replica" else "job",
        checkpoint_interval_s=checkpoint if checkpoint else None,
        max_duration_s=max_duration if max_duration else None,
        grace_period_s=30.0 if grace is None else grace,
        preemptible=preemptible in _TRUE,
    )


def read_trace(
    stream: IO[str], source: str = "trace", flavors: Iterable[str] | None = None
) -> Trace:
    reader = csv.DictReader(stream)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise SimInputError(f"{source} line 1: missing column(s): {', '.join(missing)}")
    known = set(flavors) if flavors is not None else None
    jobs = [_job(_Row(source, reader.line_num, row), i, known) for i, row in enumerate(reader)]
    ids: set[str] = set()
    for job in jobs:
        if job.id in ids:
            raise SimInputError(f"{source}: id {job.id!r} appears twice")
        ids.add(job.id)
    return Trace(jobs).sorted()


def load_trace(path: str | Path, flavors: Iterable[str] | None = None) -> Trace:
    p = Path(path)
    try:
        with p.open(newline="") as stream:
            return read_trace(stream, source=str(p), flavors=flavors)
    except OSError as exc:
        raise SimInputError(f"{p}: cannot read: {exc.strerror}") from None


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_trace(trace: Trace, stream: IO[str]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    for j in trace.jobs:
        writer.writerow(
            (
                _fmt(j.submit_s),
                j.tenant,
                j.flavor,
                j.nodes,
                j.chips_per_node,
                _fmt(j.duration_s),
                j.priority,
                j.kind,
                _fmt(j.checkpoint_interval_s),
                _fmt(j.max_duration_s),
                _fmt(j.grace_period_s),
                "true" if j.preemptible else "false",
                j.id,
            )
        )


def save_trace(trace: Trace, path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", newline="") as stream:
        write_trace(trace, stream)
    tmp.replace(p)
