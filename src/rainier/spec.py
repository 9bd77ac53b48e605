"""The documents users write (YAML) and the API accepts (JSON): one definition per field.

Every other layer derives from these models: the REST API publishes them in its OpenAPI schema,
the CLI submits them as they are, the store keeps them as JSON. Validation errors are reported
with the field path and, for YAML, the line it came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rainier.catalog import check_flavor
from rainier.limits import (
    ENV_NAME_PATTERN,
    MAX_ADDRESS_CHARS,
    MAX_BATCH_TOKENS,
    MAX_CHIPS_PER_NODE,
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    MAX_COMMITTED_USD,
    MAX_CONTRACT_CHIPS,
    MAX_DISPLAY_NAME_CHARS,
    MAX_DURATION_S,
    MAX_ENV_BYTES,
    MAX_ENV_VARS,
    MAX_INFLIGHT_PER_REPLICA,
    MAX_LABEL_CHARS,
    MAX_NODES_PER_JOB,
    MAX_OVERRIDE_INT,
    MAX_OVERRIDES,
    MAX_PATH_CHARS,
    MAX_REPLICAS,
    MAX_RPM,
    MAX_STEPS,
    MAX_TRAIN_TOKENS,
    MAX_URL_CHARS,
    MAX_WEIGHT,
    NAME_PATTERN,
)

Name = Annotated[
    str,
    Field(pattern=NAME_PATTERN, max_length=63, description="lowercase letters, digits, '-'"),
]
TopologyLevel = Literal["zone", "block", "rack"]


Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
PathText = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]
ContractChips = Annotated[int, Field(ge=0, le=MAX_CONTRACT_CHIPS)]
OverrideValue = Annotated[int, Field(ge=-MAX_OVERRIDE_INT, le=MAX_OVERRIDE_INT)] | float | bool


class Document(BaseModel):
    """Base of every document: unknown fields are errors, not silently dropped, and a value of
    the wrong type is not converted (`"2"` is no number of chips, `1` no yes-or-no); only
    times and money take their usual text forms."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, allow_inf_nan=False, strict=True
    )


class NodeLabels(Document):
    zone: Label = "zone-a"
    block: Label = "block-0"
    rack: Label = "rack-0"


class NodeSpec(Document):
    kind: Literal["Node"] = "Node"
    name: Name
    flavor: str = Field(max_length=32)
    chips: int = Field(gt=0, le=MAX_CHIPS_PER_NODE)
    labels: NodeLabels = Field(default_factory=NodeLabels)
    address: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=MAX_ADDRESS_CHARS,
        description="where the node's tasks are reachable",
    )

    @model_validator(mode="after")
    def _known_flavor(self) -> NodeSpec:
        check_flavor(self.flavor)
        return self


class TenantSpec(Document):
    kind: Literal["Tenant"] = "Tenant"
    name: Name
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)


class Term(Document):
    start: datetime = Field(strict=False)
    end: datetime = Field(strict=False)

    @model_validator(mode="after")
    def _ordered(self) -> Term:
        if self.start.tzinfo is None:
            self.start = self.start.replace(tzinfo=UTC)
        if self.end.tzinfo is None:
            self.end = self.end.replace(tzinfo=UTC)
        if self.end <= self.start:
            raise ValueError("term.end must be after term.start")
        return self


class ContractSpec(Document):
    """A tenant's commitment: money over a term in exchange for guaranteed chips."""

    kind: Literal["Contract"] = "Contract"
    name: Name
    tenant: Name
    term: Term
    committed_usd: Decimal = Field(
        strict=False, ge=0, le=MAX_COMMITTED_USD, max_digits=15, decimal_places=2
    )
    guaranteed_chips: dict[str, ContractChips] = Field(
        default_factory=dict, description="flavor -> chips reserved for this tenant"
    )
    borrow_limit_chips: dict[str, ContractChips] | None = Field(
        None,
        description="flavor -> how many chips beyond the guarantee the tenant may borrow; "
        "absent = unlimited, a flavor missing from the map = no borrowing",
    )
    discount: Decimal = Field(Decimal("0"), strict=False, ge=0, lt=1, description="off list price")
    priority_tier: int = Field(0, ge=0, le=9)
    weight: float | None = Field(
        None, gt=0, le=MAX_WEIGHT, description="share of idle chips; default guarantee"
    )
    monthly_budget_usd: Decimal | None = Field(
        None,
        strict=False,
        gt=0,
        le=MAX_COMMITTED_USD,
        max_digits=15,
        decimal_places=2,
        description="alert at 50/80/100 % of it",
    )
    alert_webhook_url: str | None = Field(
        None,
        pattern=r"^https?://",
        max_length=MAX_URL_CHARS,
        description="spend alerts are POSTed here, signed with the contract's webhook secret",
    )
    backdate: bool = Field(
        False,
        description="sign a term that began in the past; its reservations since are billed",
    )

    @model_validator(mode="after")
    def _flavors(self, info: ValidationInfo) -> ContractSpec:
        if not (info.context or {}).get("stored"):  # `rainier.spec_stored`
            for flavor in [*self.guaranteed_chips, *(self.borrow_limit_chips or {})]:
                check_flavor(flavor)
        return self


class TrainSpec(Document):
    """A training run of rainier's runtime (`python -m rainier.train`) on the job's gang.

    Checked here, at submission, so that a wrong shape or option is refused with its field
    instead of failing on the chips an hour later. The model is exported when the run ends
    and registered under `model_name` (default: the job's name) as a new version.
    """

    model_config = ConfigDict(
        json_schema_extra=lambda schema: schema.update(_exactly_one_of("steps", "tokens"))
    )

    preset: Literal["tiny", "10m", "125m", "1b"] = "tiny"
    overrides: dict[Annotated[str, Field(max_length=64)], OverrideValue] = Field(
        default_factory=dict,
        max_length=MAX_OVERRIDES,
        description="model config fields, e.g. {n_layers: 4}",
    )
    data: list[PathText] = Field(
        min_length=1, max_length=1000, description="text files, folders or globs on the nodes"
    )
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    tokens: int | None = Field(
        None, ge=1, le=MAX_TRAIN_TOKENS, description="train this many tokens instead of steps"
    )
    batch_size: int = Field(8, ge=1, le=65536, description="sequences per rank per step")
    grad_accum: int = Field(1, ge=1, le=4096)
    seq_len: int = Field(256, ge=8, le=1_048_576)
    lr: float = Field(3e-4, gt=0, le=1)
    warmup_steps: int | None = Field(None, ge=0, le=MAX_STEPS)
    seed: int = Field(0, ge=-(2**63), lt=2**63)
    checkpoint_every: int = Field(
        100, ge=0, le=MAX_STEPS, description="steps; 0 = only on stop and at the end"
    )
    log_every: int = Field(10, ge=1, le=MAX_STEPS)
    eval_every: int = Field(
        0, ge=0, le=MAX_STEPS, description="steps between validation passes; 0 = at the end"
    )
    model_name: Name | None = None
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 where the chip has bf16 matrix units, else fp32"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        from rainier.train.config import build_config

        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of steps and tokens")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"grad_accum: {self.grad_accum} does not divide batch_size {self.batch_size}"
            )
        try:
            config = build_config(self.preset, self.override_args())
        except ValueError as exc:
            raise ValueError(f"overrides: {exc}") from None
        if self.seq_len > config.max_seq_len:
            raise ValueError(
                f"seq_len: {self.seq_len} exceeds the model's max_seq_len "
                f"{config.max_seq_len}; add overrides.max_seq_len"
            )
        return self

    def override_args(self) -> list[str]:
        return [
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.overrides.items()
        ]

    def command(self, python: str, job_name: str, world_size: int, export: str) -> list[str]:
        """The runtime's command line; tokens become steps here, where the gang size is known."""
        tokens_per_step = self.batch_size * self.seq_len * world_size
        steps = self.steps or max(1, -(-(self.tokens or 0) // tokens_per_step))
        argv = [python, "-m", "rainier.train", "--data", *self.data, "--preset", self.preset]
        for item in self.override_args():
            argv += ["--override", item]
        argv += [
            "--steps", str(steps),
            "--batch-size", str(self.batch_size),
            "--grad-accum", str(self.grad_accum),
            "--seq-len", str(self.seq_len),
            "--lr", repr(self.lr),
            "--seed", str(self.seed),
            "--checkpoint-every", str(self.checkpoint_every),
            "--log-every", str(self.log_every),
            "--eval-every", str(self.eval_every),
            "--export", export,
            "--model-name", self.model_name or job_name,
            "--dtype", self.dtype,
        ]  # fmt: skip
        if self.warmup_steps is not None:
            argv += ["--warmup-steps", str(self.warmup_steps)]
        return argv


class JobSpec(Document):
    """A gang: `nodes` tasks of `chips_per_node` chips each, placed all at once or not at all.

    It runs `command`, or, with a `train:` section, rainier's training runtime."""

    model_config = ConfigDict(
        json_schema_extra=lambda schema: schema.update(_exactly_one_of("command", "train"))
    )

    kind: Literal["Job"] = "Job"
    name: Name
    tenant: Name | None = Field(None, description="defaults to the caller's tenant")
    command: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_COMMAND_ARGS,
        description=f"argv, or one string run by /bin/sh -c; {MAX_COMMAND_BYTES} bytes at most",
        json_schema_extra=lambda schema: schema.update(
            anyOf=[
                {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": MAX_COMMAND_ARGS,
                },
                {"type": "string"},
                {"type": "null"},
            ]
        ),
    )
    train: TrainSpec | None = None
    env: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN, max_length=256)], str] = Field(
        default_factory=dict,
        max_length=MAX_ENV_VARS,
        description=f"{MAX_ENV_BYTES} bytes at most, as NAME=value strings",
        json_schema_extra={"additionalProperties": False},
    )
    flavor: str = Field("cpu", max_length=32)
    nodes: int = Field(1, ge=1, le=MAX_NODES_PER_JOB)
    chips_per_node: int = Field(1, ge=0, le=MAX_CHIPS_PER_NODE)
    priority: int = Field(0, ge=-100, le=100)
    max_restarts: int = Field(0, ge=0, le=100)
    within: TopologyLevel | None = Field(None, description="keep the whole gang in one ...")
    max_duration_s: float | None = Field(None, gt=0, le=MAX_DURATION_S)
    grace_period_s: float = Field(30.0, ge=0, le=3600, description="SIGTERM to SIGKILL")
    memory_gb: float | None = Field(
        None, gt=0, le=65536, description="host memory per task; default per chip of the flavor"
    )
    preemptible: bool = True
    may_preempt_own: bool = Field(False, description="may preempt its tenant's lower priority")

    @model_validator(mode="before")
    @classmethod
    def _command_string(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            data = {**data, "command": ["/bin/sh", "-c", data["command"]]}
        return data

    @model_validator(mode="after")
    def _known_flavor(self, info: ValidationInfo) -> JobSpec:
        if (self.command is None) == (self.train is None):
            raise ValueError("give exactly one of command and train")
        if not (info.context or {}).get("stored"):  # `rainier.spec_stored`
            check_flavor(self.flavor)
        return self

    @field_validator("env")
    @classmethod
    def _env_fits_exec(cls, env: dict[str, str]) -> dict[str, str]:
        size = sum(len(f"{k}={v}".encode()) + 1 for k, v in env.items())
        if size > MAX_ENV_BYTES:
            raise ValueError(f"{size} bytes; at most {MAX_ENV_BYTES} are allowed")
        return env

    @field_validator("command")
    @classmethod
    def _command_fits_exec(cls, command: list[str] | None) -> list[str] | None:
        size = sum(len(a.encode()) + 1 for a in command or [])
        if size > MAX_COMMAND_BYTES:
            raise ValueError(f"{size} bytes; at most {MAX_COMMAND_BYTES} are allowed")
        return command


class Replicas(Document):
    min: int = Field(1, ge=0, le=MAX_REPLICAS)
    max: int = Field(1, ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max < self.min:
            raise ValueError("replicas.max must be >= replicas.min")
        return self


class ServingEngine(StrEnum):
    """What a deployment's replicas run: rainier's own serving runtime, or a vLLM server
    (`make vllm` installs it; `RAINIER_VLLM_PYTHON` names another build, e.g. CUDA's)."""

    RAINIER = "rainier"
    VLLM = "vllm"


class DeploymentSpec(Document):
    kind: Literal["Deployment"] = "Deployment"
    name: Name
    tenant: Name | None = None
    model: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="a registered model name[:version], or a model folder the tenant owns",
    )
    flavor: str = Field("cpu", max_length=32)
    chips_per_replica: int = Field(1, ge=0, le=MAX_CHIPS_PER_NODE)
    replicas: Replicas = Field(default_factory=Replicas)
    target_inflight_per_replica: int = Field(
        8, ge=1, le=MAX_INFLIGHT_PER_REPLICA, description="autoscaling target"
    )
    rate_limit_rpm: int | None = Field(None, ge=1, le=MAX_RPM)
    priority: int = Field(50, ge=-100, le=100)
    max_batch_tokens: int = Field(2048, ge=16, le=MAX_BATCH_TOKENS)
    engine: ServingEngine = Field(
        ServingEngine.RAINIER, strict=False, description="what replicas run: rainier or vllm"
    )
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="weights and KV cache; auto = bf16 where the chip has bf16 matrix units"
    )

    @model_validator(mode="after")
    def _known_flavor(self, info: ValidationInfo) -> DeploymentSpec:
        if not (info.context or {}).get("stored"):  # `rainier.spec_stored`
            check_flavor(self.flavor)
        return self


DtypeName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,16}$")]  # bf16, fp8, ...


class FlavorSpec(Document):
    """An operator's accelerator: its chips' memory and peaks, its list price and how a task
    is handed its chips. Publishing a new price never reprices what was billed before."""

    kind: Literal["Flavor"] = "Flavor"
    name: Name
    memory_gb: float = Field(gt=0, le=65536, description="memory of one chip")
    peak_tflops: dict[DtypeName, Annotated[float, Field(gt=0, lt=1e7)]] = Field(
        min_length=1, description="dtype -> dense TFLOP/s of one chip, e.g. {bf16: 989}"
    )
    list_usd_per_chip_hour: Decimal = Field(
        strict=False, ge=0, le=1_000_000, max_digits=12, decimal_places=6
    )
    device_env: Literal[
        "CUDA_VISIBLE_DEVICES", "NEURON_RT_VISIBLE_CORES", "HIP_VISIBLE_DEVICES", "cpu"
    ] = Field(description="how a task is handed its chips; cpu = an affinity of cores")
    devices_per_chip: int = Field(1, ge=1, le=64, description="device indices per chip")
    task_memory_gb_per_chip: float = Field(16.0, gt=0, le=65536, description="host memory")


AnyDocument = Annotated[
    NodeSpec | TenantSpec | ContractSpec | JobSpec | DeploymentSpec | FlavorSpec,
    Field(discriminator="kind"),
]
_ANY = TypeAdapter(AnyDocument)
KINDS = ("Node", "Tenant", "Contract", "Job", "Deployment", "Flavor")
DOCUMENT_MODELS: dict[Any, type[BaseModel]] = {
    "Node": NodeSpec,
    "Tenant": TenantSpec,
    "Contract": ContractSpec,
    "Job": JobSpec,
    "Deployment": DeploymentSpec,
    "Flavor": FlavorSpec,
}


def _exactly_one_of(*fields: str) -> dict[str, Any]:
    """JSON Schema for a validator's "give exactly one of ...": one field present and not null."""
    return {
        "oneOf": [{"required": [f], "properties": {f: {"not": {"type": "null"}}}} for f in fields]
    }


# Validation context of documents read back from the store: flavors are not checked again.
STORED_CONTEXT = {"stored": True}


class SpecError(ValueError):
    """A document a user wrote is wrong; `problems` are (location, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems))


def validate_document(data: Any) -> BaseModel:
    """One document from already-parsed data (JSON body or a YAML mapping)."""
    if not isinstance(data, dict):
        raise SpecError([("", "a document must be a mapping with a 'kind' field")])
    if data.get("kind") not in KINDS:
        raise SpecError([("kind", f"must be one of {', '.join(KINDS)}; got {data.get('kind')!r}")])
    try:
        return _ANY.validate_python(data)
    except ValidationError as exc:
        from rainier.spec_hints import problems

        kind = data["kind"]
        raise SpecError(problems(exc, DOCUMENT_MODELS[kind], kind)) from None
