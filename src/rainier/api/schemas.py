"""Response bodies of the REST API (requests are the spec documents themselves)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rainier.spec import Name
from rainier.store.lifecycle import JobState, StopCause, TaskState

T = TypeVar("T")
# Positions and cursors a query may name: JSON-safe integers (2**53), which also fit a 64-bit
# column and a file offset.
MAX_OFFSET = 2**53
MAX_METRICS = 256
MAX_STEP = 2**31 - 1  # job_metrics.step is a 32-bit column


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class TenantOut(Out):
    id: str
    name: str
    display_name: str | None
    created_at: datetime


MAX_KEY_RPM = 1_000_000
MAX_KEY_TPM = 1_000_000_000
KeyRpm = Annotated[int, Field(strict=True, ge=1, le=MAX_KEY_RPM)]
KeyTpm = Annotated[int, Field(strict=True, ge=1, le=MAX_KEY_TPM)]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Name | None = None
    role: Literal["operator", "admin", "member"] = "member"
    name: str = Field("", max_length=100)
    rate_limit_rpm: KeyRpm | None = None
    rate_limit_tpm: KeyTpm | None = None


class KeyOut(Out):
    id: str
    tenant: str | None = None
    role: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None


class KeyCreated(KeyOut):
    key: str


class NodeOut(Out):
    name: str
    flavor: str
    chips: int
    zone: str
    block: str
    rack: str
    address: str
    source: str
    schedulable: bool
    created_at: datetime
    used_chips: int = 0
    isolation: str = Field("unknown", description="sandbox, none or unknown: what its tasks get")


class ContractOut(Out):
    id: str
    name: str
    tenant: str
    term_start: datetime
    term_end: datetime
    committed_usd: Decimal
    spec: dict[str, Any]
    billed_at_signing_usd: Decimal | None = Field(
        None, description="reservations of a backdated term's past, billed at once"
    )
    note: str | None = None


class TaskOut(Out):
    id: str
    attempt: int
    rank: int
    node: str
    chips: int
    state: TaskState
    exit_code: int | None
    started_at: datetime | None
    exited_at: datetime | None


class EventOut(Out):
    at: datetime
    kind: str
    message: str


class JobOut(Out):
    id: str
    name: str
    tenant: str
    kind: str
    state: JobState
    stop_cause: StopCause | None = Field(
        None, description="while stopping: why, which is where the job goes next"
    )
    reason: str
    flavor: str
    nodes: int
    chips_per_node: int
    priority: int
    attempt: int
    restarts: int
    preemptions: int
    placement: list[str] | None = None
    exit_code: int | None
    metrics: dict[str, Any] | None
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobDetail(JobOut):
    tasks: list[TaskOut]
    events: list[EventOut]


class MetricsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    step: int = Field(strict=True, ge=0, le=MAX_STEP)
    metrics: dict[Annotated[str, Field(max_length=64)], Annotated[float, Field(strict=True)]] = (
        Field(max_length=MAX_METRICS)
    )


class LogChunk(BaseModel):
    data: str
    offset: int
    done: bool


class ErrorOut(BaseModel):
    """Every error of the REST API: what is wrong, and where when a field is to blame."""

    message: str
    problems: list[dict[str, str]] | None = None


class InitOut(BaseModel):
    key: str
    message: str
