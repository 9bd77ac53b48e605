"""What the launcher tells a task through its environment.

rainier's executors set both the `RAINIER_*` variables and the standard torch.distributed ones;
torchrun sets only the latter. The standard ones win where both exist, so the same command runs
under either launcher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RunEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: str | None = None
    job_id: str | None = None
    job_name: str | None = None
    tenant: str | None = None
    node: str | None = None
    flavor: str | None = None
    chips: int | None = None
    attempt: int = 0
    checkpoint_dir: str | None = None
    control_url: str | None = None
    token: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> RunEnv:
        env = os.environ if environ is None else environ

        def get(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        def integer(default: int, *names: str) -> int:
            raw = get(*names)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{names[0]}={raw!r} is not an integer") from None

        world_size = integer(1, "WORLD_SIZE", "RAINIER_WORLD_SIZE")
        rank = integer(0, "RANK", "RAINIER_RANK")
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
        chips = get("RAINIER_CHIPS")
        return cls(
            rank=rank,
            world_size=world_size,
            local_rank=integer(0, "LOCAL_RANK"),
            local_world_size=integer(1, "LOCAL_WORLD_SIZE"),
            master_addr=get("MASTER_ADDR"),
            master_port=get("MASTER_PORT"),
            job_id=get("RAINIER_JOB_ID"),
            job_name=get("RAINIER_JOB_NAME"),
            tenant=get("RAINIER_TENANT"),
            node=get("RAINIER_NODE"),
            flavor=get("RAINIER_FLAVOR"),
            chips=int(chips) if chips and chips.isdigit() else None,
            attempt=integer(0, "RAINIER_ATTEMPT"),
            checkpoint_dir=get("RAINIER_CHECKPOINT_DIR"),
            control_url=(get("RAINIER_CONTROL_URL") or "").rstrip("/") or None,
            token=get("RAINIER_TOKEN"),
        )
