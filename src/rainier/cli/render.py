"""Tables, JSON and a job's description as the CLI (and the demo) print them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit(data: Any, output: str, columns: Sequence[str]) -> None:
    items = data["items"] if isinstance(data, dict) and "items" in data else data
    if output == "json":
        click.echo(json.dumps(items, indent=2, default=str))
    else:
        click.echo(table(items if isinstance(items, list) else [items], columns))


def describe_text(d: dict[str, Any]) -> str:
    lines = [
        f"Job:        {d['id']} ({d['name']})",
        f"Tenant:     {d['tenant']}",
        f"State:      {d['state']}",
        f"Reason:     {d['reason']}",
        f"Resources:  {d['nodes']} node(s) x {d['chips_per_node']} {d['flavor']} chips, priority {d['priority']}",
        f"Attempt:    {d['attempt']} (restarts {d['restarts']}, preemptions {d['preemptions']})",
    ]
    if d.get("placement"):
        lines.append(f"Placement:  {', '.join(d['placement'])}")
    if d.get("exit_code") is not None:
        lines.append(f"Exit code:  {d['exit_code']}")
    if d.get("metrics"):
        lines.append("Metrics:    " + ", ".join(f"{k}={_fmt(v)}" for k, v in d["metrics"].items()))
    if d.get("tasks"):
        lines.append("Tasks:")
        lines += [
            f"  attempt {t['attempt']} rank {t['rank']} on {t['node']}: {t['state']}"
            + (f" (code {t['exit_code']})" if t["exit_code"] is not None else "")
            for t in d["tasks"]
        ]
    if d.get("events"):
        lines.append("Events:")
        lines += [f"  {e['at'][:19]}  {e['kind']:<14} {e['message']}" for e in d["events"]]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
