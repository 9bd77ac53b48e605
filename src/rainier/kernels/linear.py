"""Typed entry to `linear.c`: a Linear layer on a weight packed once, for few-row steps."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rainier.allocator import zeros_on_huge_pages
from rainier.kernels import I64, PTR, bind, load, require_float32_cpu


@dataclass(frozen=True)
class PackedLinear:
    """`x @ weight.T + bias` with the weight in the kernel's panel layout; the original
    weight is not kept, so packing does not double a model's memory."""

    packed: torch.Tensor
    bias: torch.Tensor | None
    out_features: int
    in_features: int
    _fn: Callable[..., Any]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`x` [rows, in_features], rows possibly strided; returns [rows, out_features]."""
        require_float32_cpu(x)
        if x.dim() != 2 or x.shape[1] != self.in_features or x.stride(1) != 1:
            raise ValueError(
                f"linear takes [rows, {self.in_features}] float32 rows, not {tuple(x.shape)}"
            )
        rows = x.shape[0]
        out = torch.empty((rows, self.out_features), dtype=torch.float32)
        bias = self.bias.data_ptr() if self.bias is not None else None
        self._fn(
            x.data_ptr(), x.stride(0), rows, self.in_features, self.packed.data_ptr(), bias,
            self.out_features, out.data_ptr(), self.out_features,
        )  # fmt: skip
        return out


class LinearKernel:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self._size = bind(lib, "packed_size", I64, I64, I64)
        self._pack = bind(lib, "pack_weight", None, PTR, I64, I64, PTR)
        self._linear = bind(lib, "linear", None, PTR, I64, I64, I64, PTR, PTR, I64, PTR, I64)

    @classmethod
    def load(cls) -> LinearKernel | None:
        lib = load("linear")
        return cls(lib) if lib is not None else None

    def pack(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> PackedLinear:
        """`weight` [out_features, in_features] as a torch Linear holds it."""
        require_float32_cpu(weight)
        if weight.dim() != 2:
            raise ValueError(f"linear packs a 2-D weight, not one of shape {tuple(weight.shape)}")
        weight = weight.contiguous()
        n, k = weight.shape
        # 2 MiB pages: a step streams every panel, and with 4 KiB pages the TLB misses and the
        # prefetchers stop at every page (12 layers 1024 wide at 16 rows: 4-8% faster).
        packed = zeros_on_huge_pages((self._size(n, k),), torch.float32)
        self._pack(weight.data_ptr(), n, k, packed.data_ptr())
        padded_bias = None
        if bias is not None:
            require_float32_cpu(bias)
            if bias.shape != (n,):
                raise ValueError(f"linear: a bias of {n} values, not {tuple(bias.shape)}")
            padded_bias = torch.zeros(self._size(n, 1), dtype=torch.float32)
            padded_bias[:n] = bias
        return PackedLinear(packed, padded_bias, n, k, self._linear)
