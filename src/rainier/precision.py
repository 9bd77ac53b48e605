"""Which floating-point type a training or serving job computes in, decided per chip.

bf16 halves the bytes every matrix product streams and, where the chip has matrix units for
it, multiplies their rate: a GPU's tensor cores, a Xeon's AMX tiles (about six times the fp32
rate per core). Where it has no such units (AVX2-only CPUs, for one) bf16 is converted to fp32
and back around every operation and runs slower than fp32 itself, so `auto` picks bf16 only
where the chip says it has them. The decision reads the CPU's feature flags, never a machine
or model name, so the same job spec does the right thing on every node it lands on.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Literal

import torch

DtypeChoice = Literal["auto", "fp32", "bf16"]
DTYPE_CHOICES: tuple[DtypeChoice, ...] = ("auto", "fp32", "bf16")
# Spellings the runtimes' command lines have long accepted, beside the short ones.
_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
SHORT_NAMES: dict[torch.dtype, str] = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}
# The CPU feature flag of matrix units that multiply bf16 (Intel AMX, Sapphire Rapids on).
AMX_BF16_FLAG = "amx_bf16"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`/proc/cpuinfo`); empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU multiplies bf16 matrices in hardware (AMX). AVX512_BF16 alone only
    converts and dots vectors, which oneDNN's bf16 GEMM does not beat fp32 with."""
    if os.environ.get("RAINIER_CPU_BF16") in ("0", "1"):  # an operator's override for a node
        return os.environ["RAINIER_CPU_BF16"] == "1"
    found = cpu_flags() if flags is None else flags
    if found:
        return AMX_BF16_FLAG in found
    return platform.machine() in ("x86_64", "AMD64") and _torch_sees_amx()


def _torch_sees_amx() -> bool:
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def fast_dtype(device: torch.device) -> torch.dtype:
    """The dtype `auto` means on this device: bf16 where the chip computes it fast, else fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.bfloat16  # other accelerators (Neuron, XLA) are bf16 machines


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The dtype a job asked for (`auto`, `fp32`, `bf16`, or a long name such as `float32`)."""
    if choice == "auto":
        return fast_dtype(device)
    try:
        return _NAMES[choice]
    except KeyError:
        known = ", ".join(["auto", *_NAMES])
        raise ValueError(f"dtype {choice!r} is not one of {known}") from None


def short_name(dtype: torch.dtype) -> str:
    """`bf16`, `fp32`, `fp16`: the names the flavor catalog keys its peaks by."""
    return SHORT_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def mixed_precision(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """Autocast to `dtype` for a training step, off for fp32. The parameters, their gradients
    and the optimizer's moments stay fp32 (the master copy): only the matrix products and
    what autocast lists with them run in bf16, so small updates are not rounded away."""
    low = dtype if dtype != torch.float32 else torch.bfloat16
    return torch.autocast(device.type, dtype=low, enabled=dtype != torch.float32)
