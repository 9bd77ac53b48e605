"""Attention of one step of the C-kernel forward: decodes from the paged cache, fresh
prefills as dense causal attention.

The paged-attention kernel computes each query token against its context one row at a time,
which suits decodes (one token a sequence, its context in cache blocks) and costs a prefill
of n tokens n^2 / 2 such row products done without any blocking. A prefill chunk that starts
its sequence has no context but its own keys and values, which are at hand in the step's
q/k/v projection; as one causal `scaled_dot_product_attention` per chunk its products are
blocked matrix multiplications (in the model's dtype, AMX on a bf16 model). Every other token
(decodes, and chunks continuing a sequence) goes to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rainier.kernels.paged_attention import PagedAttention
from rainier.serve.batch import BatchInput

# Below this many tokens a chunk stays with the kernel: the dense call's set-up outweighs it.
DENSE_MIN_TOKENS = 16


@dataclass(frozen=True)
class StepAttention:
    """Which rows of a step go which way, worked out once per step for all its layers."""

    dense: list[tuple[int, int]]  # (first row, rows) of each fresh prefill done densely
    paged_rows: torch.Tensor | None  # the other rows, when they are not simply a prefix
    paged_prefix: int  # or: rows 0 ..< paged_prefix, when they are
    token_seq: torch.Tensor
    context_lens: torch.Tensor

    @classmethod
    def plan(cls, batch: BatchInput) -> StepAttention:
        dense = [(s, n) for s, n in batch.fresh_prefills if n >= DENSE_MIN_TOKENS]
        covered = sum(n for _, n in dense)
        total = batch.num_tokens
        if not dense:
            return cls([], None, total, batch.token_seq, batch.context_lens)
        first = min(s for s, _ in dense)
        if first + covered == total:
            prefix = first
            return cls(dense, None, prefix, batch.token_seq[:prefix], batch.context_lens[:prefix])
        keep = torch.ones(total, dtype=torch.bool)
        for s, n in dense:
            keep[s : s + n] = False
        rows = keep.nonzero().view(-1)
        return cls(dense, rows, 0, batch.token_seq[rows], batch.context_lens[rows])

    def __call__(
        self,
        kernel: PagedAttention,
        qkv: torch.Tensor,
        heads: int,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        batch: BatchInput,
        scale: float,
    ) -> torch.Tensor:
        """[tokens, heads, head_dim] float32, for `qkv` [tokens, heads + 2 kv_heads, head_dim]
        after the rotary embedding; the caches already hold this step's keys and values."""
        n, _, head_dim = qkv.shape
        if not self.dense:
            return kernel(
                qkv[:, :heads], k_cache, v_cache, batch.block_tables, self.token_seq,
                self.context_lens, batch.block_size, scale,
            )  # fmt: skip
        out = qkv.new_empty((n, heads, head_dim))
        if self.paged_rows is None:
            if self.paged_prefix:
                out[: self.paged_prefix] = kernel(
                    qkv[: self.paged_prefix, :heads], k_cache, v_cache, batch.block_tables,
                    self.token_seq, self.context_lens, batch.block_size, scale,
                )  # fmt: skip
        elif self.paged_rows.numel():
            out[self.paged_rows] = kernel(
                qkv[self.paged_rows, :heads].contiguous(), k_cache, v_cache, batch.block_tables,
                self.token_seq, self.context_lens, batch.block_size, scale,
            )  # fmt: skip
        kv_heads = (qkv.shape[1] - heads) // 2
        for s, rows in self.dense:
            # [1, heads, rows, head_dim]: with a batch dimension PyTorch takes its flash
            # kernel; a 3-D call falls back to the plain formula, several times slower.
            chunk = qkv[None, s : s + rows].to(k_cache.dtype).transpose(1, 2)
            q, k = chunk[:, :heads], chunk[:, heads : heads + kv_heads]
            v = chunk[:, heads + kv_heads :]
            attended = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=heads != kv_heads
            )
            out[s : s + rows] = attended[0].transpose(0, 1)
        return out
