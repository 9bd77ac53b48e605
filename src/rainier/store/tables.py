"""The control plane's tables. Desired state (specs) is stored as JSON beside the columns the
control plane queries by; money is NUMERIC, time is UTC."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    """Opaque ids that sort by creation time, so keyset pagination follows submission order."""
    return f"{prefix}-{time.time_ns():x}{os.urandom(4).hex()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite forgets time zones; every datetime read back is UTC-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; rainier stores UTC only")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


Money = Numeric(20, 6)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        Decimal: Money,
    }


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # The gateway's per-key limits (requests and tokens per minute); None: unlimited.
    rate_limit_rpm: Mapped[int | None]
    rate_limit_tpm: Mapped[int | None]


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    flavor: Mapped[str] = mapped_column(String(32))
    chips: Mapped[int]
    zone: Mapped[str] = mapped_column(String(63))
    block: Mapped[str] = mapped_column(String(63))
    rack: Mapped[str] = mapped_column(String(63))
    address: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16), default="manual")
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime | None]


class Contract(Base):
    __tablename__ = "contracts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    term_start: Mapped[datetime]
    term_end: Mapped[datetime]
    committed_usd: Mapped[Decimal]
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


JOB_STATES = ("pending", "running", "stopping", "succeeded", "failed", "stopped")
TERMINAL_STATES = ("succeeded", "failed", "stopped")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "submit_key", name="uq_jobs_tenant_submit_key"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_tenant_name", "tenant_id", "name"),
        Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16), default="job")
    deployment_id: Mapped[str | None] = mapped_column(String(40), index=True)
    spec: Mapped[dict[str, Any]]
    flavor: Mapped[str] = mapped_column(String(32))
    nodes: Mapped[int]
    chips_per_node: Mapped[int]
    priority: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    preempting: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None]
    submit_key: Mapped[str | None] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


TASK_STATES = ("starting", "running", "exited", "lost")


class Task(Base):
    """One process of one attempt of a job; `handle` is the executor's way back to it."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "rank", name="uq_tasks_attempt_rank"),)
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    attempt: Mapped[int]
    rank: Mapped[int]
    node: Mapped[str] = mapped_column(String(63))
    chips: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default="starting")
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    exit_code: Mapped[int | None]
    started_at: Mapped[datetime | None]
    exited_at: Mapped[datetime | None]
    billed_until: Mapped[datetime | None]
    term_sent_at: Mapped[datetime | None]
    kill_at: Mapped[datetime | None]


class Event(Base):
    """What happened to an object, in words, for `rainier describe`."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object", "object_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(80))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (Index("ix_job_metrics_job", "job_id", "step"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    step: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    values: Mapped[dict[str, Any]]


class Lease(Base):
    """A row per singleton role (the reconciler): whoever holds an unexpired lease acts."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[float] = mapped_column(Float)


class Meta(Base):
    """Facts about the installation itself: when it was initialised, the job-token secret."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A versioned model folder of a tenant; versions count up per (tenant, name)."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "version", name="uq_models_tenant_name_version"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[int]
    path: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    """A model served behind the gateway; `model_path` is resolved when the spec is applied,
    and `revision` counts changes that need new replicas (model, flavor, chips, priority)."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_deployments_tenant_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]]
    model: Mapped[str] = mapped_column(Text)
    model_path: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    desired_replicas: Mapped[int]
    scaled_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReplicaEndpoint(Base):
    """Where a replica's current attempt answers and how busy it is, as the leader last saw."""

    __tablename__ = "replica_endpoints"
    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int]
    url: Mapped[str] = mapped_column(String(255))
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    running: Mapped[int] = mapped_column(Integer, default=0)
    waiting: Mapped[int] = mapped_column(Integer, default=0)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenUsageRecord(Base):
    """Tokens of one gateway request, written once (unique `request_id`) for metering."""

    __tablename__ = "token_usage"
    __table_args__ = (Index("ix_token_usage_tenant_at", "tenant_id", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    deployment_id: Mapped[str] = mapped_column(String(40), index=True)
    deployment: Mapped[str] = mapped_column(String(63))
    model: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int]
    output_tokens: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Micros(TypeDecorator[Decimal]):
    """Exact decimals that SQL sums: NUMERIC on PostgreSQL, integer millionths on SQLite (whose
    NUMERIC is a float, which would make a statement's total differ from the sum of its lines)."""

    impl = Numeric(24, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(24, 6))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        scaled = Decimal(value).scaleb(6)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than 6 decimal places")
        return int(scaled)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-6)
        return Decimal(value)


class ExactRate(TypeDecorator[Decimal]):
    """A unit price at whatever precision the discount gives it: text on SQLite, never summed."""

    impl = Numeric()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return format(value, "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UsageLineRow(Base):
    """`rainier.metering.UsageLine` as stored: inserted once (unique `key`), never updated.

    One index serves both ways in: a contract's lines are all its tenant's, so a query by
    contract names the tenant too and reads the tenant's lines of the period, filtering on the
    contract in the index. A second index (by contract) cost every insert as much again as this
    one; a tenant's contracts follow each other in time, so there is little to filter out."""

    __tablename__ = "usage_lines"
    __table_args__ = (
        Index("ix_usage_lines_tenant_start_contract", "tenant", "period_start", "contract"),
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    contract: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(24))
    source: Mapped[str] = mapped_column(String(200))
    resource: Mapped[str] = mapped_column(String(200))
    sku: Mapped[str] = mapped_column(String(200))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    quantity: Mapped[Decimal] = mapped_column(Micros)
    unit: Mapped[str] = mapped_column(String(16))
    rate_usd: Mapped[Decimal] = mapped_column(ExactRate)
    pricing_unit: Mapped[str] = mapped_column(String(16))
    amount_usd: Mapped[Decimal] = mapped_column(Micros)
    list_rate_usd: Mapped[Decimal] = mapped_column(ExactRate)
    list_amount_usd: Mapped[Decimal] = mapped_column(Micros)
    price_book_version: Mapped[int]
    description: Mapped[str] = mapped_column(Text, default="")
    corrects: Mapped[str | None] = mapped_column(String(64))
    corrects_kind: Mapped[str | None] = mapped_column(String(24))


class PricePoint(Base):
    """The operator's price book: the rows of the highest `version` are in force (each from its
    `effective_from`); with no rows at all, `rainier.metering.default_price_book()` applies.
    `kind` is ``chip`` (sku = flavor, USD per chip-hour) or ``token`` (sku = model or ``*``,
    USD per million input and output tokens)."""

    __tablename__ = "price_points"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    sku: Mapped[str] = mapped_column(String(200), primary_key=True)
    effective_from: Mapped[datetime] = mapped_column(primary_key=True)
    usd: Mapped[Decimal] = mapped_column(ExactRate)
    output_usd: Mapped[Decimal | None] = mapped_column(ExactRate)


class MeteringCursor(Base):
    """How far periodic metering work has come (reservation periods settled, token rows priced)."""

    __tablename__ = "metering_cursors"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[datetime | None]
    value: Mapped[int | None] = mapped_column(BigInteger)


class SpendAlert(Base):
    """A spend threshold crossed, once per `key`; doubles as the webhook outbox."""

    __tablename__ = "spend_alerts"
    __table_args__ = (Index("ix_spend_alerts_pending", "delivered_at", "next_attempt_at"),)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    contract: Mapped[str] = mapped_column(String(63), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    url: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")


class TaskEndpoint(Base):
    """An address a task registered over HTTP with its job token: a replica's serving port
    (`purpose="serve"`), or the port rank 0 bound for its gang to meet at (`"rendezvous"`).
    Kept per attempt, so a restarted attempt's ranks never meet at the previous one's."""

    __tablename__ = "task_endpoints"
    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateBucket(Base):
    """One rate limit's state, shared by every API process on the database: the instant its
    bucket would next be full again (GCRA's "theoretical arrival time", epoch seconds)."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    full_at: Mapped[float] = mapped_column(Float)
    admitted: Mapped[bool] = mapped_column(Boolean, default=False)
