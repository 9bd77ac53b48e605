"""Typed entry to `paged_attention.c`: attention read straight from a paged KV cache."""

from __future__ import annotations

import ctypes

import torch

from rainier.kernels import F32, I64, PTR, bind, load, require_float32_cpu


class PagedAttention:
    """One call per layer for every query token of a step, decodes and prefill chunks alike.

    On the CPU, float32 queries over a float32 or bf16 cache, with a head size that is a
    multiple of 8 (the kernel's vector width): that is the path where composing it from
    PyTorch operators costs a gather of every context and a padded attention call per group of
    sequences.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        argtypes = (PTR, I64, PTR, PTR, PTR, I64, PTR, PTR, PTR, I64, I64, I64, I64, I64, F32)
        self._fns = {
            torch.float32: bind(lib, "paged_attention", ctypes.c_int, *argtypes),
            torch.bfloat16: bind(lib, "paged_attention_bf16", ctypes.c_int, *argtypes),
        }

    @classmethod
    def load(cls) -> PagedAttention | None:
        lib = load("paged_attention")
        return cls(lib) if lib is not None else None

    def __call__(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        block_tables: torch.Tensor,
        token_seq: torch.Tensor,
        context_lens: torch.Tensor,
        block_size: int,
        scale: float,
    ) -> torch.Tensor:
        """`q` [tokens, heads, head_dim] (rows may be strided, as a slice of a fused q/k/v
        projection is); caches [slots, kv_heads, head_dim]; `block_tables` [sequences,
        blocks]; `token_seq` and `context_lens` [tokens]. Returns [tokens, heads, head_dim]."""
        tokens, heads, head_dim = q.shape
        kv_heads = k_cache.shape[1]
        require_float32_cpu(q)
        fn = self._fns.get(k_cache.dtype)
        if fn is None or v_cache.dtype != k_cache.dtype or k_cache.device.type != "cpu":
            raise ValueError("paged_attention reads a float32 or bfloat16 CPU cache")
        if head_dim % 8:
            raise ValueError(f"paged_attention needs a head size divisible by 8, not {head_dim}")
        if q.stride(2) != 1 or q.stride(1) != head_dim:
            raise ValueError("paged_attention needs each query row's heads contiguous")
        if heads % kv_heads or k_cache.shape != v_cache.shape:
            raise ValueError("paged_attention: heads must be a multiple of kv_heads")
        for t in (k_cache, v_cache, block_tables, token_seq, context_lens):
            if not t.is_contiguous():
                raise ValueError("paged_attention needs contiguous caches and index tensors")
        for t in (block_tables, token_seq, context_lens):
            if t.dtype != torch.int64:
                raise ValueError("paged_attention indexes with int64 tensors")
        out = torch.empty((tokens, heads, head_dim), dtype=q.dtype)
        if tokens == 0:
            return out
        status = fn(
            q.data_ptr(), q.stride(0), k_cache.data_ptr(), v_cache.data_ptr(),
            block_tables.data_ptr(), block_tables.shape[1], token_seq.data_ptr(),
            context_lens.data_ptr(), out.data_ptr(), tokens, heads, kv_heads, head_dim,
            block_size, scale,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("paged_attention could not allocate its score buffer")
        return out
