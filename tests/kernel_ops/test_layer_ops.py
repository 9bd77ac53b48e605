"""The layer kernels against the PyTorch operators they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rainier.kernels.layer_ops import LayerOps


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


@pytest.mark.parametrize("dim", [8, 64, 100, 256])
def test_rms_norm_and_the_residual_add(ops: LayerOps, dim: int) -> None:
    gen = torch.Generator().manual_seed(dim)
    x = torch.randn(7, dim, generator=gen) * 3
    weight = torch.randn(dim, generator=gen)
    torch.testing.assert_close(ops.rms_norm(x, weight, 1e-5), rms_norm(x, weight, 1e-5))
    rows = x[::2]  # strided rows, as the rows that want logits are
    torch.testing.assert_close(ops.rms_norm(rows, weight, 1e-6), rms_norm(rows, weight, 1e-6))
    delta = torch.randn(7, dim, generator=gen)
    hidden = x.clone()
    out = ops.add_rms_norm(hidden, delta, weight, 1e-5)
    torch.testing.assert_close(hidden, x + delta)
    torch.testing.assert_close(out, rms_norm(x + delta, weight, 1e-5))


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 16), (3, 1, 10), (8, 8, 64)])
def test_rope_store_rotates_in_place_and_fills_the_slots(
    ops: LayerOps, heads: int, kv_heads: int, head_dim: int, cache_dtype: torch.dtype
) -> None:
    """A bf16 cache holds exactly what torch's rounding of the float32 rows gives."""
    gen = torch.Generator().manual_seed(heads + head_dim)
    rows, slots_total = 6, 40
    qkv = torch.randn(rows, heads + 2 * kv_heads, head_dim, generator=gen)
    angles = torch.rand(50, head_dim // 2, generator=gen) * 6
    cos = torch.cat([angles, angles], -1).cos()
    sin = torch.cat([angles, angles], -1).sin()
    positions = torch.tensor([0, 3, 49, 7, 7, 20])
    slots = torch.tensor([5, 0, 39, 17, 18, 2])
    caches = torch.zeros(2, slots_total, kv_heads, head_dim, dtype=cache_dtype)
    original = qkv.clone()
    ops.rope_store(qkv, heads, cos, sin, positions, slots, caches[0], caches[1])

    half = head_dim // 2
    qk = original[:, : heads + kv_heads]
    rotated = torch.cat([-qk[..., half:], qk[..., :half]], -1)
    expected = qk * cos[positions][:, None] + rotated * sin[positions][:, None]
    torch.testing.assert_close(qkv[:, : heads + kv_heads], expected)
    torch.testing.assert_close(qkv[:, heads + kv_heads :], original[:, heads + kv_heads :])
    assert torch.equal(caches[0][slots], qkv[:, heads : heads + kv_heads].to(cache_dtype))
    torch.testing.assert_close(
        caches[0][slots].float(), expected[:, heads:].to(cache_dtype).float()
    )
    assert torch.equal(caches[1][slots], original[:, heads + kv_heads :].to(cache_dtype))
    untouched = torch.ones(slots_total, dtype=torch.bool)
    untouched[slots] = False
    assert not caches[:, untouched].any()


@pytest.mark.parametrize("ffn", [8, 13, 682])
def test_silu_mul(ops: LayerOps, ffn: int) -> None:
    gen = torch.Generator().manual_seed(ffn)
    gate_up = torch.randn(5, 2 * ffn, generator=gen) * 4
    gate_up[0, :4] = torch.tensor([-200.0, -90.0, 90.0, 0.0])  # far past where e^x overflows
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(ops.silu_mul(gate_up), F.silu(gate) * up)


def test_refuses_tensors_it_would_misread(ops: LayerOps) -> None:
    with pytest.raises(ValueError, match="float32"):
        ops.silu_mul(torch.zeros(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        ops.add_rms_norm(torch.zeros(8, 4).t(), torch.zeros(4, 8), torch.ones(8), 1e-5)
    with pytest.raises(ValueError, match="shape"):
        ops.add_rms_norm(torch.zeros(4, 8), torch.zeros(4, 9), torch.ones(8), 1e-5)
    caches = torch.zeros(2, 4, 1, 8)
    with pytest.raises(ValueError, match="one per row"):
        ops.rope_store(
            torch.zeros(2, 4, 8), 2, torch.ones(4, 8), torch.zeros(4, 8),
            torch.zeros(2, dtype=torch.int32), torch.zeros(2, dtype=torch.long), caches[0],
            caches[1],
        )  # fmt: skip
