"""Process-group plumbing, reduced to what the loop needs; every call is a no-op on one rank."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from rainier.train.env import RunEnv


def pick_device(requested: str, env: RunEnv) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device(requested)


def init(env: RunEnv, device: torch.device) -> None:
    if not env.distributed:
        return
    if not env.master_addr or not env.master_port:
        raise ValueError(f"WORLD_SIZE={env.world_size} needs MASTER_ADDR and MASTER_PORT")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(minutes=30),
    )


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if active():
        dist.barrier()


def mean(values: torch.Tensor) -> torch.Tensor:
    if active():
        return total(values) / dist.get_world_size()
    return values


def total(values: torch.Tensor) -> torch.Tensor:
    if active():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_true(flag: bool, device: torch.device) -> bool:
    """Whether any rank says yes: ranks must agree on stopping, or a collective would hang."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
