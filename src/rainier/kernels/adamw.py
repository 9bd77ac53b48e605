"""Typed entry to `adamw.c`: AdamW on float32 master weights from bf16 gradients."""

from __future__ import annotations

import ctypes
import math

import torch

from rainier.kernels import F32, I64, PTR, bind, load


class AdamWKernel:
    """One AdamW update of a float32 weight and its moments, from a bf16 gradient, that also
    writes the weight's bf16 working copy."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._step = bind(lib, "adamw_step_bf16_grad", None,
                          PTR, PTR, PTR, PTR, PTR, I64, *(F32,) * 7)  # fmt: skip
        self._sum_squares = bind(lib, "sum_squares_bf16", ctypes.c_double, PTR, I64)

    @classmethod
    def load(cls) -> AdamWKernel | None:
        lib = load("adamw")
        return cls(lib) if lib is not None else None

    def sum_squares(self, grad: torch.Tensor) -> float:
        """The sum of the squares of a contiguous bf16 CPU tensor, accumulated in float32
        per chunk and double over chunks."""
        _require(grad, torch.bfloat16, grad.numel())
        total = float(self._sum_squares(grad.data_ptr(), grad.numel()))
        if total < 0:
            raise MemoryError("sum_squares_bf16: out of memory")
        return total

    def step(
        self,
        param: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        grad: torch.Tensor,
        working: torch.Tensor,
        *,
        step: int,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        grad_scale: float = 1.0,
    ) -> None:
        """Updates `param`, `exp_avg`, `exp_avg_sq` and `working` in place; `step` counts
        this update (1 on the first)."""
        n = param.numel()
        for t in (param, exp_avg, exp_avg_sq):
            _require(t, torch.float32, n)
        for t in (grad, working):
            _require(t, torch.bfloat16, n)
        beta1, beta2 = betas
        self._step(
            param.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), grad.data_ptr(),
            working.data_ptr(), n, 1.0 - lr * weight_decay, beta1, beta2,
            lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step), eps, grad_scale,
        )  # fmt: skip


def _require(t: torch.Tensor, dtype: torch.dtype, numel: int) -> None:
    """Refuses what the kernel would misread through a raw pointer."""
    if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"adamw takes contiguous {dtype} CPU tensors here")
    if t.numel() != numel:
        raise ValueError("adamw takes tensors of one size")
