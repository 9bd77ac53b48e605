"""CSV writers over a text stream the caller opened (file, HTTP response, StringIO)."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TextIO

from rainier.metering.focus import FOCUS_COLUMNS, focus_row
from rainier.metering.ledger import UsageLine

LINE_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UsageLine))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def write_lines_csv(lines: Iterable[UsageLine], stream: TextIO) -> int:
    """Every field of every line, Decimal in plain notation; returns the number of rows."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(LINE_COLUMNS)
    count = 0
    for line in lines:
        writer.writerow([_cell(getattr(line, name)) for name in LINE_COLUMNS])
        count += 1
    return count


def write_focus_csv(
    lines: Iterable[UsageLine], stream: TextIO, provider: str = "rainier", currency: str = "USD"
) -> int:
    writer = csv.DictWriter(stream, fieldnames=FOCUS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for line in lines:
        writer.writerow(focus_row(line, provider, currency))
        count += 1
    return count
