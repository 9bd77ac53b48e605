"""Tables and JSON as the CLI prints them."""

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
