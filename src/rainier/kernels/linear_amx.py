"""Typed entry to `linear_amx.c`: a Linear layer on a bf16 weight packed once for AMX tiles."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rainier.allocator import zeros_on_huge_pages
from rainier.kernels import I64, PTR, bind, require_float32_cpu


@dataclass(frozen=True)
class AmxLinear:
    """`x @ weight.T + bias` with the bf16 weight in the kernel's tile layout (the original is
    not kept), for float32 rows, which the kernel rounds to bf16 as autocast would; the output
    is float32."""

    packed: torch.Tensor
    bias: torch.Tensor | None
    out_features: int
    in_features: int
    _fn: Callable[..., Any]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`x` [rows, in_features], float32 or bf16 (widened first, exactly), rows possibly
        strided; returns [rows, out_features] float32."""
        x = _rows(x, self.in_features)
        rows = x.shape[0]
        out = torch.empty((rows, self.out_features), dtype=torch.float32)
        bias = self.bias.data_ptr() if self.bias is not None else None
        status = self._fn(
            x.data_ptr(), x.stride(0), rows, self.in_features, self.packed.data_ptr(), bias,
            self.out_features, out.data_ptr(), self.out_features,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("amx_linear: no memory for the product's buffers")
        return out


@dataclass(frozen=True)
class AmxSwiGLU:
    """`silu(x @ gate.T) * (x @ up.T)` with the [2 ffn, in] gate/up weight packed so that each
    output's two products meet in one tile group: the SwiGLU is the product's epilogue.
    `out_features` is the weight's (2 ffn); a call returns [rows, ffn] float32."""

    packed: torch.Tensor
    ffn: int
    in_features: int
    _fn: Callable[..., Any]
    bias: None = None

    @property
    def out_features(self) -> int:
        return 2 * self.ffn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _rows(x, self.in_features)
        out = torch.empty((x.shape[0], self.ffn), dtype=torch.float32)
        status = self._fn(
            x.data_ptr(), x.stride(0), x.shape[0], self.in_features, self.packed.data_ptr(),
            self.ffn, out.data_ptr(), self.ffn,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("amx_swiglu: no memory for the product's buffers")
        return out


def _rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """`x` as the kernels take it: float32 rows of `width`, bf16 ones widened (exactly)."""
    if x.dtype == torch.bfloat16:
        x = x.float()
    require_float32_cpu(x)
    if x.dim() != 2 or x.shape[1] != width or x.stride(1) != 1:
        raise ValueError(f"linear takes [rows, {width}] rows, not {tuple(x.shape)}")
    return x


class AmxLinearKernel:
    """Packs bf16 weights for, and multiplies on, the AMX tiles of a library holding
    `linear_amx.c` (`decoder.c` includes it)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._size = bind(lib, "amx_packed_size", I64, I64, I64)
        self._pack = bind(lib, "amx_pack_weight", None, PTR, I64, I64, PTR)
        self._linear = bind(lib, "amx_linear", ctypes.c_int,
                            PTR, I64, I64, I64, PTR, PTR, I64, PTR, I64)  # fmt: skip
        self._swiglu_size = bind(lib, "amx_swiglu_packed_size", I64, I64, I64)
        self._pack_swiglu = bind(lib, "amx_pack_swiglu", None, PTR, I64, I64, PTR)
        self._swiglu = bind(lib, "amx_swiglu", ctypes.c_int,
                            PTR, I64, I64, I64, PTR, I64, PTR, I64)  # fmt: skip

    @classmethod
    def on(cls, lib: ctypes.CDLL) -> AmxLinearKernel | None:
        """The kernel where `lib` was built with AMX and Linux grants this process the tile
        state; None elsewhere (no AMX, or an older kernel), where oneDNN's products run."""
        built = bind(lib, "amx_built", ctypes.c_int)
        enable = bind(lib, "amx_enable", ctypes.c_int)
        if not built() or enable() != 0:
            return None
        return cls(lib)

    def pack(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> AmxLinear:
        """`weight` [out_features, in_features] bf16, as a torch Linear holds it."""
        weight = _bf16_matrix(weight)
        n, k = weight.shape
        # 2 MiB pages, as the float32 panels: a decode step streams every tile once.
        packed = zeros_on_huge_pages((self._size(n, k),), torch.bfloat16)
        self._pack(weight.data_ptr(), n, k, packed.data_ptr())
        if bias is not None:
            bias = bias.float().contiguous()
            if bias.shape != (n,):
                raise ValueError(f"linear: a bias of {n} values, not {tuple(bias.shape)}")
        return AmxLinear(packed, bias, n, k, self._linear)

    def pack_swiglu(self, gate_up: torch.Tensor) -> AmxSwiGLU:
        """`gate_up` [2 ffn, in_features] bf16: the gate projection's rows, then the up's."""
        gate_up = _bf16_matrix(gate_up)
        rows, k = gate_up.shape
        if rows % 2:
            raise ValueError("a gate/up weight stacks two matrices of equal rows")
        ffn = rows // 2
        packed = zeros_on_huge_pages((self._swiglu_size(ffn, k),), torch.bfloat16)
        self._pack_swiglu(gate_up.data_ptr(), ffn, k, packed.data_ptr())
        return AmxSwiGLU(packed, ffn, k, self._swiglu)


def _bf16_matrix(weight: torch.Tensor) -> torch.Tensor:
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or weight.dim() != 2:
        raise ValueError("amx_linear packs a 2-D bf16 CPU weight")
    return weight.contiguous()
