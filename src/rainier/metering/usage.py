"""What metering is handed: chip-time of task intervals (reconciler) and tokens (gateway)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rainier.metering.periods import require_utc


@dataclass(frozen=True, slots=True)
class TaskInterval:
    """`chips` chips of `flavor` held by one task over [start, end)."""

    tenant: str
    contract: str
    job_id: str
    task_id: str
    flavor: str
    chips: int
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", require_utc(self.start, "interval start"))
        object.__setattr__(self, "end", require_utc(self.end, "interval end"))
        if self.end < self.start:
            raise ValueError(f"task {self.task_id}: interval ends before it starts")
        if self.chips < 0:
            raise ValueError(f"task {self.task_id}: chips must be >= 0")

    @property
    def source(self) -> str:
        return f"task:{self.job_id}/{self.task_id}"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one request served by a deployment, at the instant it completed."""

    tenant: str
    contract: str
    deployment: str
    request_id: str
    model: str
    input_tokens: int
    output_tokens: int
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_utc(self.at, "token usage time"))
        if self.input_tokens < 0 or self.output_tokens < 0:
            raise ValueError(f"request {self.request_id}: token counts must be >= 0")

    @property
    def source(self) -> str:
        return f"request:{self.request_id}"


def next_slice(
    started_at: datetime,
    billed_until: datetime | None,
    now: datetime,
    ended_at: datetime | None = None,
) -> tuple[datetime, datetime] | None:
    """The task's next unbilled span, or None when there is nothing new to bill.

    It starts where the last billed slice ended (or where the task started) and ends at `now`,
    or at the task's end if it has ended. Because every slice begins exactly where the previous
    one stopped, slices never overlap and never leave a gap, however often the reconciler ticks.
    Take `billed_until` from the ledger itself (the latest `period_end` of the lines whose
    `source` is the task's `TaskInterval.source`), so there is no second fact to keep in step.
    """
    start = require_utc(billed_until if billed_until is not None else started_at, "billed_until")
    end = require_utc(now, "now")
    if ended_at is not None:
        end = min(end, require_utc(ended_at, "ended_at"))
    if start < require_utc(started_at, "started_at"):
        raise ValueError("billed_until lies before the task started")
    if end <= start:
        return None
    return start, end
