"""Typed entry to `layer_ops.c`: a Llama layer's element-wise passes, one call each.

These sit on a serving step's hot path, so they check only what would make the C code read or
write out of bounds (dtype, device, contiguity, shapes); the caller owns the meaning.
"""

from __future__ import annotations

import ctypes

import torch

from rainier.kernels import F32, I64, PTR, bind, load, require_float32_cpu

F32T = torch.float32


def _check(*tensors: torch.Tensor) -> None:
    require_float32_cpu(*tensors, contiguous=True)


def _check_either(t: torch.Tensor) -> None:
    """float32, or bf16 (a bf16 model's activation between its products)."""
    if t.dtype == torch.bfloat16 and t.device.type == "cpu" and t.is_contiguous():
        return
    _check(t)


def _narrow(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError("the layer kernels write float32 or bf16")
    return dtype


class LayerOps:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self._rms_norm = bind(lib, "rms_norm", None, PTR, I64, PTR, PTR, I64, I64, F32)
        self._add_rms_norm = bind(lib, "add_rms_norm", None, PTR, PTR, PTR, PTR, I64, I64, F32)
        argtypes = (PTR, I64, I64, I64, I64, PTR, PTR, PTR, PTR, PTR, PTR)
        self._rope_stores = {
            torch.float32: bind(lib, "rope_store", None, *argtypes),
            torch.bfloat16: bind(lib, "rope_store_bf16", None, *argtypes),
        }
        self._silu_mul = bind(lib, "silu_mul", None, PTR, PTR, I64, I64)
        self._rms_norm_bf16 = bind(lib, "rms_norm_bf16", None, PTR, I64, PTR, PTR, I64, I64, F32)
        self._add_rms_norm_bf16 = bind(lib, "add_rms_norm_bf16", None,
                                       PTR, PTR, PTR, PTR, I64, I64, F32)  # fmt: skip
        self._add_bf16 = bind(lib, "add_bf16", None, PTR, PTR, I64)
        self._silu_mul_bf16 = bind(lib, "silu_mul_bf16", None, PTR, PTR, I64, I64)

    @classmethod
    def load(cls) -> LayerOps | None:
        lib = load("layer_ops")
        return cls(lib) if lib is not None else None

    def rms_norm(
        self, x: torch.Tensor, weight: torch.Tensor, eps: float, out_dtype: torch.dtype = F32T
    ) -> torch.Tensor:
        """`x` [rows, dim]; its rows may be strided (a selection of a batch's rows). The result
        is float32, or bf16 for a bf16 product to take."""
        rows, dim = x.shape
        if x.stride(1) != 1 or x.dtype != torch.float32 or weight.shape != (dim,):
            raise ValueError("rms_norm takes float32 rows and a weight of their width")
        _check(weight)
        out = torch.empty((rows, dim), dtype=_narrow(out_dtype))
        fn = self._rms_norm if out_dtype == F32T else self._rms_norm_bf16
        fn(x.data_ptr(), x.stride(0), weight.data_ptr(), out.data_ptr(), rows, dim, eps)
        return out

    def add_rms_norm(
        self, hidden: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """Adds `delta` to `hidden` in place and returns the RMSNorm of the sum. A bf16
        `delta` (a bf16 product's output) gives a bf16 result (the next product's input)."""
        _check(hidden, weight)
        _check_either(delta)
        rows, dim = hidden.shape
        if delta.shape != hidden.shape or weight.shape != (dim,):
            raise ValueError("add_rms_norm: hidden, delta and weight disagree in shape")
        out = torch.empty(hidden.shape, dtype=delta.dtype)
        fn = self._add_rms_norm if delta.dtype == F32T else self._add_rms_norm_bf16
        fn(hidden.data_ptr(), delta.data_ptr(), weight.data_ptr(), out.data_ptr(), rows, dim, eps)
        return out

    def rope_store(
        self,
        qkv: torch.Tensor,
        heads: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> None:
        """Rotates the query and key heads of `qkv` [rows, heads + 2 kv_heads, head_dim] in
        place and writes each row's keys and values to its slot of the caches, which are
        float32 or bf16 (rounded to nearest as stored)."""
        _check(qkv, cos, sin)
        store = self._rope_stores.get(k_cache.dtype)
        if store is None or v_cache.dtype != k_cache.dtype or k_cache.device.type != "cpu":
            raise ValueError("rope_store writes a float32 or bfloat16 CPU cache")
        if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
            raise ValueError("the C kernels take contiguous tensors here")
        rows, width, head_dim = qkv.shape
        kv_heads = k_cache.shape[1]
        if width != heads + 2 * kv_heads or k_cache.shape[2] != head_dim or head_dim % 2:
            raise ValueError("rope_store: qkv does not match the caches' heads")
        if cos.shape[1] != head_dim or v_cache.shape != k_cache.shape:
            raise ValueError("rope_store: the rotary tables or caches have the wrong width")
        for index in (positions, slots):
            if index.dtype != torch.int64 or not index.is_contiguous() or len(index) != rows:
                raise ValueError("rope_store: positions and slots are int64, one per row")
        store(
            qkv.data_ptr(), rows, heads, kv_heads, head_dim, cos.data_ptr(), sin.data_ptr(),
            positions.data_ptr(), slots.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
        )  # fmt: skip

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up for `gate_up` [rows, 2 * ffn] laid out [gate | up], float32 or
        bf16, in its dtype."""
        _check_either(gate_up)
        rows, width = gate_up.shape
        out = torch.empty((rows, width // 2), dtype=gate_up.dtype)
        fn = self._silu_mul if gate_up.dtype == F32T else self._silu_mul_bf16
        fn(gate_up.data_ptr(), out.data_ptr(), rows, width // 2)
        return out

    def add_(self, hidden: torch.Tensor, delta: torch.Tensor) -> None:
        """hidden += delta, `delta` float32 or bf16."""
        _check(hidden)
        _check_either(delta)
        if delta.shape != hidden.shape:
            raise ValueError("add_: hidden and delta disagree in shape")
        if delta.dtype == F32T:
            hidden += delta
        else:
            self._add_bf16(hidden.data_ptr(), delta.data_ptr(), hidden.numel())
