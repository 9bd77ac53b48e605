"""The paged-attention kernel against attention written out in float64, and its loader."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rainier import kernels
from rainier.kernels.paged_attention import PagedAttention


def reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: list[list[int]],
    token_seq: list[int],
    context_lens: list[int],
    block_size: int,
) -> torch.Tensor:
    """Each token's context gathered slot by slot, attended in float64."""
    tokens, heads, dim = q.shape
    groups = heads // k_cache.shape[1]
    out = torch.empty(tokens, heads, dim, dtype=torch.float64)
    for t in range(tokens):
        table, length = tables[token_seq[t]], context_lens[t]
        slots = [table[p // block_size] * block_size + p % block_size for p in range(length)]
        keys = k_cache[slots].double().repeat_interleave(groups, dim=1)  # [len, heads, dim]
        values = v_cache[slots].double().repeat_interleave(groups, dim=1)
        scores = torch.einsum("hd,lhd->hl", q[t].double(), keys) / math.sqrt(dim)
        out[t] = torch.einsum("hl,lhd->hd", scores.softmax(-1), values)
    return out


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim", "block_size"),
    [
        (4, 2, 64, 16),
        (4, 4, 80, 5),
        (8, 2, 128, 16),
        (2, 1, 8, 1),
        (6, 3, 72, 7),
        # groups of four (read four query rows a pass), of six (four, then a pair), and of
        # four on a width that is no multiple of 32
        (16, 4, 64, 16),
        (12, 2, 64, 16),
        (4, 1, 40, 8),
    ],
)
def test_matches_attention_in_float64(
    kernel: PagedAttention,
    heads: int,
    kv_heads: int,
    dim: int,
    block_size: int,
    cache_dtype: torch.dtype,
) -> None:
    """Decodes and prefill chunks in one call, contexts of every length class (shorter than a
    block, not a multiple of 8, long), blocks scattered over the pool, query rows strided as a
    slice of a fused q/k/v projection is; a bf16 cache is read as the floats it holds."""
    gen = torch.Generator().manual_seed(heads * dim + block_size)
    lengths = [1, 3, 9, block_size, 2 * block_size + 1, 97, 301 // block_size * block_size]
    num_blocks = sum(-(-n // block_size) for n in lengths) + 20
    cache = torch.randn(2, num_blocks * block_size, kv_heads, dim, generator=gen).to(cache_dtype)
    tables, token_seq, context_lens = [], [], []
    free = torch.randperm(num_blocks, generator=gen).tolist()
    for seq, length in enumerate(lengths):
        blocks = -(-length // block_size)
        tables.append([free.pop() for _ in range(blocks)])
        if seq % 2:  # a decode: one token seeing everything
            token_seq.append(seq)
            context_lens.append(length)
        else:  # a prefill chunk: its last few positions, each seeing its own prefix
            for position in range(max(0, length - 5), length):
                token_seq.append(seq)
                context_lens.append(position + 1)
    widest = max(len(t) for t in tables)
    padded = torch.tensor([t + [0] * (widest - len(t)) for t in tables])
    fused = torch.randn(len(token_seq), heads + 2 * kv_heads, dim, generator=gen)
    q = fused[:, :heads]
    assert not q.is_contiguous()
    out = kernel(
        q, cache[0], cache[1], padded, torch.tensor(token_seq), torch.tensor(context_lens),
        block_size, 1 / math.sqrt(dim),
    )  # fmt: skip
    expected = reference(q, cache[0], cache[1], tables, token_seq, context_lens, block_size)
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)


def test_refuses_what_it_cannot_compute(kernel: PagedAttention) -> None:
    cache = torch.zeros(2, 16, 1, 64)
    index = torch.zeros(1, dtype=torch.long)
    table = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="float32"):
        kernel(torch.zeros(1, 2, 64, dtype=torch.float64), cache[0], cache[1], table, index,
               index + 1, 16, 0.125)  # fmt: skip
    with pytest.raises(ValueError, match="bfloat16 CPU cache"):
        kernel(torch.zeros(1, 2, 64), cache[0].half(), cache[1].half(), table, index,
               index + 1, 16, 0.125)  # fmt: skip
    with pytest.raises(ValueError, match="divisible by 8"):
        kernel(torch.zeros(1, 2, 12), cache[0, :, :, :12], cache[1, :, :, :12], table, index,
               index + 1, 16, 0.125)  # fmt: skip
    with pytest.raises(ValueError, match="int64"):
        kernel(torch.zeros(1, 2, 64), cache[0], cache[1], table.int(), index, index + 1, 16, 0.1)


@pytest.fixture
def fresh_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`load` remembers its answer per process; these tests see it from a clean slate, with a
    cache folder of their own, and leave the remembered answers empty for whoever is next."""
    monkeypatch.setenv("RAINIER_KERNEL_CACHE", str(tmp_path / "kernels"))
    kernels.load.cache_clear()
    yield tmp_path / "kernels"
    kernels.load.cache_clear()


def test_builds_once_into_its_cache(fresh_loader: Path) -> None:
    if kernels._compiler() is None:
        pytest.skip("no C compiler here")
    assert kernels.load("paged_attention") is not None
    built = list(fresh_loader.iterdir())
    assert [p.suffix for p in built] == [".so"]
    stamp = built[0].stat().st_mtime_ns
    kernels.load.cache_clear()
    assert kernels.load("paged_attention") is not None
    assert [p.stat().st_mtime_ns for p in fresh_loader.iterdir()] == [stamp]


@pytest.mark.parametrize("name", sorted(p.stem for p in kernels.SOURCES.glob("*.c")), ids=str)
def test_every_kernel_library_builds_where_a_compiler_is(fresh_loader: Path, name: str) -> None:
    """A library that fails to build falls back to PyTorch with a warning, and its tests
    skip as on a machine without a compiler: here a broken kernel fails instead."""
    if kernels._compiler() is None:
        pytest.skip("no C compiler here")
    assert kernels.load(name) is not None


def test_turned_off_or_without_compiler_it_falls_back(
    fresh_loader: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAINIER_KERNELS", "0")
    assert kernels.load("paged_attention") is None
    kernels.load.cache_clear()
    monkeypatch.setenv("RAINIER_KERNELS", "1")
    monkeypatch.setenv("CC", str(fresh_loader.parent / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="rainier.kernels"):
        assert kernels.load("paged_attention") is None
    assert "no C compiler" in caplog.text


def test_a_failing_build_leaves_nothing_behind(
    fresh_loader: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = fresh_loader.parent / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'internal compiler error' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with caplog.at_level(logging.WARNING, logger="rainier.kernels"):
        assert kernels.load("paged_attention") is None
    assert "internal compiler error" in caplog.text
    assert os.listdir(fresh_loader) == []
