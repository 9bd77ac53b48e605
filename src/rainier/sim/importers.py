"""Public GPU-cluster traces turned into rainier traces.

Each format keeps what the simulator needs (when a job was submitted, by whom, how many GPUs in
what shape, how long it ran) and reports what it had to drop, so a user knows how much of their
trace made it. Submission times are shifted so the first job arrives at 0. GPUs become chips of
one flavor, chosen by the caller.

* philly: Microsoft Philly `cluster_job_log`, a JSON list of jobs with `jobid`, `vc`,
  `submitted_time` and `attempts` (each with `start_time`, `end_time` and `detail`, one entry
  per machine with its `gpus`). The run time is the sum of the attempts; the shape is the last
  attempt's (machines x GPUs on the busiest machine).
* helios: SenseTime Helios `cluster_log.csv` and InternLM Acme `trace_*.csv`: a header with
  `submit_time`, `gpu_num`, and `duration` (or `start_time` and `end_time`); the tenant is `vc`,
  else `user`; `node_num` gives the shape when it divides `gpu_num`.
* pai: Alibaba PAI 2020 `pai_job_table.csv` (job_name, inst_id, user, status, start_time,
  end_time) and `pai_task_table.csv` (job_name, task_name, inst_num, status, start_time,
  end_time, plan_cpu, plan_mem, plan_gpu, gpu_type), without headers; which file is which is read
  from the column count. `plan_gpu` is in percent of a GPU; fractions round up to a chip.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rainier.sim.errors import SimInputError
from rainier.sim.model import Trace, TraceJob

FORMATS = ("philly", "helios", "pai")


@dataclass(slots=True)
class Imported:
    trace: Trace
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class _Raw:
    id: str
    submit_s: float
    tenant: str
    chips: int
    nodes: int | None
    duration_s: float


def shape(chips: int, node_chips: int, nodes: int | None = None) -> tuple[int, int]:
    """Nodes x chips per node for a GPU count: the trace's own split if it is even, else packed."""
    if nodes and nodes > 0 and chips % nodes == 0 and chips // nodes <= node_chips:
        return nodes, chips // nodes
    if chips <= node_chips:
        return 1, chips
    return math.ceil(chips / node_chips), node_chips


def _time(value: Any) -> float | None:
    """Seconds from a trace timestamp: a number, or 'YYYY-MM-DD HH:MM:SS' taken as UTC."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.lower() in ("none", "null", "nan"):
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _finish(raws: list[_Raw], out: Imported, flavor: str, node_chips: int) -> Imported:
    if not raws:
        out.trace = Trace([])
        return out
    origin = min(r.submit_s for r in raws)
    jobs = []
    for r in raws:
        nodes, cpn = shape(r.chips, node_chips, r.nodes)
        jobs.append(
            TraceJob(
                id=r.id,
                submit_s=r.submit_s - origin,
                tenant=r.tenant,
                flavor=flavor,
                nodes=nodes,
                chips_per_node=cpn,
                duration_s=r.duration_s,
                max_duration_s=None,
            )
        )
    out.trace = Trace(jobs).sorted()
    return out


def _unique(raws: list[_Raw]) -> list[_Raw]:
    seen: dict[str, int] = {}
    out = []
    for r in raws:
        n = seen.get(r.id, 0)
        seen[r.id] = n + 1
        out.append(r if n == 0 else _Raw(f"{r.id}-{n}", *_rest(r)))
    return out


def _rest(r: _Raw) -> tuple[float, str, int, int | None, float]:
    return (r.submit_s, r.tenant, r.chips, r.nodes, r.duration_s)


def import_philly(paths: Sequence[Path], flavor: str = "h200", node_chips: int = 8) -> Imported:
    out = Imported(Trace([]))
    raws: list[_Raw] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise SimInputError(f"{path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SimInputError(f"{path} line {exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise SimInputError(f"{path}: expected a JSON list of jobs (cluster_job_log)")
        for i, job in enumerate(data):
            if not isinstance(job, dict):
                raise SimInputError(f"{path}: job #{i}: expected an object")
            for key in ("jobid", "submitted_time", "attempts"):
                if key not in job:
                    raise SimInputError(f"{path}: job #{i}: missing field {key!r}")
            raw = _philly_job(job, out)
            if raw is not None:
                raws.append(raw)
    return _finish(_unique(raws), out, flavor, node_chips)


def _philly_job(job: dict[str, Any], out: Imported) -> _Raw | None:
    submit = _time(job.get("submitted_time"))
    if submit is None:
        out.skip("no submission time")
        return None
    duration, nodes, chips = 0.0, 0, 0
    for attempt in job.get("attempts") or []:
        start, end = _time(attempt.get("start_time")), _time(attempt.get("end_time"))
        if start is not None and end is not None and end >= start:
            duration += end - start
        detail = attempt.get("detail") or []
        if detail:
            per_node = [len(d.get("gpus") or []) for d in detail]
            nodes, chips = len(detail), max(per_node) * len(detail)
    if chips == 0:
        out.skip("no GPUs")
        return None
    if duration <= 0:
        out.skip("never ran")
        return None
    return _Raw(str(job["jobid"]), submit, str(job.get("vc") or "default"), chips, nodes, duration)


def _csv_rows(path: Path) -> Iterable[tuple[int, list[str]]]:
    try:
        with Path(path).open(newline="") as stream:
            reader = csv.reader(stream)
            for row in reader:
                if row:
                    yield reader.line_num, row
    except OSError as exc:
        raise SimInputError(f"{path}: cannot read: {exc.strerror}") from None


def import_helios(paths: Sequence[Path], flavor: str = "h200", node_chips: int = 8) -> Imported:
    out = Imported(Trace([]))
    raws: list[_Raw] = []
    for path in paths:
        rows = iter(_csv_rows(path))
        first = next(rows, None)
        if first is None:
            continue
        header = [h.strip() for h in first[1]]
        col = {h: i for i, h in enumerate(header)}
        missing = [c for c in ("submit_time", "gpu_num") if c not in col]
        if "duration" not in col and not {"start_time", "end_time"} <= set(col):
            missing.append("duration (or start_time and end_time)")
        if missing:
            raise SimInputError(f"{path} line 1: missing column(s): {', '.join(missing)}")
        tenant_col = col.get("vc", col.get("user"))
        for line, row in rows:
            raw = _helios_row(path, line, row, col, tenant_col, out)
            if raw is not None:
                raws.append(raw)
    return _finish(_unique(raws), out, flavor, node_chips)


def _helios_row(
    path: Path,
    line: int,
    row: list[str],
    col: dict[str, int],
    tenant_col: int | None,
    out: Imported,
) -> _Raw | None:
    def cell(name: str) -> str:
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    try:
        gpus = int(float(cell("gpu_num") or 0))
    except ValueError:
        raise SimInputError(
            f"{path} line {line}: gpu_num: {cell('gpu_num')!r} is not a number"
        ) from None
    if gpus <= 0:
        out.skip("no GPUs")
        return None
    submit = _time(cell("submit_time"))
    if submit is None:
        raise SimInputError(f"{path} line {line}: submit_time: {cell('submit_time')!r} unreadable")
    duration = _time(cell("duration")) if "duration" in col else None
    if duration is None:
        start, end = _time(cell("start_time")), _time(cell("end_time"))
        if start is None or end is None:
            out.skip("never ran")
            return None
        duration = end - start
    if duration < 0:
        raise SimInputError(f"{path} line {line}: duration: negative")
    node_text = cell("node_num")
    nodes = int(float(node_text)) if node_text.replace(".", "", 1).isdigit() else None
    tenant = row[tenant_col].strip() if tenant_col is not None and tenant_col < len(row) else ""
    job_id = cell("job_id") or f"{Path(path).stem}-{line}"
    return _Raw(job_id, submit, tenant or "default", gpus, nodes, duration)


_PAI_JOB_COLUMNS = 6
_PAI_TASK_COLUMNS = 10


def import_pai(paths: Sequence[Path], flavor: str = "h200", node_chips: int = 8) -> Imported:
    out = Imported(Trace([]))
    jobs: dict[str, tuple[str, float, float | None]] = {}
    tasks: dict[str, list[tuple[int, float]]] = {}
    kinds: set[str] = set()
    for path in paths:
        for line, row in _csv_rows(path):
            if row[0] == "job_name":
                continue
            if len(row) == _PAI_JOB_COLUMNS:
                kinds.add("job")
                start, end = _time(row[4]), _time(row[5])
                if start is None:
                    out.skip("no start time")
                    continue
                jobs[row[0]] = (row[2] or "default", start, end)
            elif len(row) == _PAI_TASK_COLUMNS:
                kinds.add("task")
                try:
                    instances = int(float(row[2] or 0))
                    gpu_percent = float(row[8] or 0)
                except ValueError:
                    raise SimInputError(
                        f"{path} line {line}: inst_num/plan_gpu: not numbers"
                    ) from None
                if instances > 0 and gpu_percent > 0:
                    tasks.setdefault(row[0], []).append((instances, gpu_percent))
            else:
                raise SimInputError(
                    f"{path} line {line}: {len(row)} columns; pai_job_table has "
                    f"{_PAI_JOB_COLUMNS}, pai_task_table has {_PAI_TASK_COLUMNS}"
                )
    for needed in ("job", "task"):
        if needed not in kinds:
            raise SimInputError(f"pai: no pai_{needed}_table rows among the files given")
    raws = []
    for name, (user, start, end) in jobs.items():
        job_tasks = tasks.get(name)
        if not job_tasks:
            out.skip("no GPUs")
            continue
        if end is None or end < start:
            out.skip("never finished")
            continue
        instances = sum(n for n, _ in job_tasks)
        per_instance = max(math.ceil(g / 100) for _, g in job_tasks)
        raws.append(_Raw(name, start, user, instances * per_instance, instances, end - start))
    return _finish(raws, out, flavor, node_chips)


def import_trace(
    fmt: str, paths: Sequence[Path], flavor: str = "h200", node_chips: int = 8
) -> Imported:
    if fmt == "philly":
        return import_philly(paths, flavor, node_chips)
    if fmt == "helios":
        return import_helios(paths, flavor, node_chips)
    if fmt == "pai":
        return import_pai(paths, flavor, node_chips)
    raise SimInputError(f"--format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
