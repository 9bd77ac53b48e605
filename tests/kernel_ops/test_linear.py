"""The packed matrix product against `F.linear`, over the shapes a step gives it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rainier.kernels.linear import LinearKernel


@pytest.mark.parametrize(
    ("rows", "out_features", "in_features"),
    [(1, 16, 8), (5, 7, 3), (13, 40, 64), (32, 1364, 256), (50, 256, 682), (1000, 33, 682)],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_f_linear(
    linear: LinearKernel, rows: int, out_features: int, in_features: int, with_bias: bool
) -> None:
    """Odd widths leave a partial panel and a partial tile of rows; 1000 rows of 682 cross the
    block of rows the kernel keeps in half the L2 (384 such rows with a 2 MiB L2)."""
    gen = torch.Generator().manual_seed(rows * out_features + in_features)
    weight = torch.randn(out_features, in_features, generator=gen)
    bias = torch.randn(out_features, generator=gen) if with_bias else None
    x = torch.randn(rows, in_features, generator=gen)
    packed = linear.pack(weight, bias)
    torch.testing.assert_close(packed(x), F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", range(1, 26))
@pytest.mark.parametrize("out_features", [24, 48, 70])
def test_every_tile_of_rows_and_columns(linear: LinearKernel, rows: int, out_features: int) -> None:
    """Every count of rows left after whole tiles (6 rows with AVX2, 12 with AVX-512), and
    columns ending inside a pair of panels (24), on a lone last panel (48) or inside one (70)."""
    gen = torch.Generator().manual_seed(rows * out_features)
    weight = torch.randn(out_features, 37, generator=gen)
    bias = torch.randn(out_features, generator=gen)
    x = torch.randn(rows, 37, generator=gen)
    packed = linear.pack(weight, bias)
    torch.testing.assert_close(packed(x), F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)


def test_strided_rows_and_no_rows(linear: LinearKernel) -> None:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 40, generator=gen)
    packed = linear.pack(weight)
    fused = torch.randn(9, 3, 40, generator=gen)
    rows = fused[:, 1]  # every row 120 floats apart, as a slice of a fused projection is
    torch.testing.assert_close(packed(rows), F.linear(rows, weight), rtol=1e-5, atol=1e-4)
    assert packed(torch.empty(0, 40)).shape == (0, 24)


def test_refuses_what_it_would_misread(linear: LinearKernel) -> None:
    packed = linear.pack(torch.ones(8, 4))
    with pytest.raises(ValueError, match=r"\[rows, 4\]"):
        packed(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"\[rows, 4\]"):
        packed(torch.ones(4, 2).t())
    with pytest.raises(ValueError, match="float32"):
        packed(torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias of 8"):
        linear.pack(torch.ones(8, 4), torch.ones(7))
