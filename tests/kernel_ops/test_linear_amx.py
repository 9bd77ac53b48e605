"""bf16 products on AMX tiles: PyTorch's result to float32 rounding, and each row's result
the same whatever else is in the call and however many threads share it."""

from __future__ import annotations

import pytest
import torch

from rainier.kernels import load
from rainier.kernels.layer_ops import LayerOps
from rainier.kernels.linear_amx import AmxLinearKernel

ROWS = [1, 5, 16, 17, 32, 33, 100, 513, 600]
SHAPES = [(64, 64), (70, 100), (200, 1030)]  # (out, in): whole tiles; ragged; rows in blocks


@pytest.fixture(scope="module")
def amx() -> AmxLinearKernel:
    lib = load("decoder")
    found = AmxLinearKernel.on(lib) if lib is not None else None
    if found is None:
        pytest.skip("no AMX here (or no C compiler): oneDNN multiplies bf16")
    return found


def reference(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The product of x rounded to bf16 (as autocast rounds it) in float64."""
    out = x.bfloat16().double() @ w.double().T
    return out + bias.double() if bias is not None else out


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_matches_the_float64_product(amx: AmxLinearKernel, rows: int, n: int, k: int) -> None:
    torch.manual_seed(rows * 1000 + n)
    w = (torch.randn(n, k) / k**0.5).bfloat16()
    bias = torch.randn(n) if n % 2 == 0 else None
    wide = torch.randn(rows, k + 7)
    x = wide[:, :k]  # rows strided, as a slice of the fused projection's output is
    out = amx.pack(w, bias)(x)
    expected = reference(x, w, bias)
    assert out.shape == (rows, n) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_a_rows_result_is_the_same_alone_in_a_batch_and_on_two_threads(
    amx: AmxLinearKernel, n: int, k: int
) -> None:
    """A decode step's row and the same row in a prefill's 600 go through different tile
    schedules (one A tile by four panels, or two by two with k in chunks); both add the same
    tile products in the same order, so serving a sequence never depends on its neighbours."""
    torch.manual_seed(n + k)
    product = amx.pack((torch.randn(n, k) / k**0.5).bfloat16())
    x = torch.randn(600, k)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        together = product(x)
        torch.set_num_threads(2)
        assert torch.equal(product(x), together)
    finally:
        torch.set_num_threads(before)
    for i in (0, 17, 511, 599):
        assert torch.equal(product(x[i : i + 1]), together[i : i + 1]), i
    assert torch.equal(product(x[:16]), together[:16])


def test_bf16_rows_widen_exactly_and_bad_input_is_refused(amx: AmxLinearKernel) -> None:
    w = torch.randn(32, 64).bfloat16()
    product = amx.pack(w)
    x = torch.randn(3, 64).bfloat16()
    assert torch.equal(product(x), product(x.float()))
    assert product(torch.zeros(0, 64)).shape == (0, 32)
    with pytest.raises(ValueError, match="bf16"):
        amx.pack(torch.randn(32, 64))
    with pytest.raises(ValueError, match="rows"):
        product(torch.randn(3, 65))
    with pytest.raises(ValueError, match="bias"):
        amx.pack(w, torch.zeros(31))


@pytest.mark.parametrize("rows", [1, 16, 17, 600])
@pytest.mark.parametrize("ffn", [32, 70, 173])
def test_the_fused_swiglu_is_the_product_then_silu_mul(
    amx: AmxLinearKernel, ops: LayerOps, rows: int, ffn: int
) -> None:
    """silu(x @ gate.T) * (x @ up.T) from one product whose tile groups hold both factors of
    each output: bitwise the plain product's gate and up columns put through `silu_mul`'s
    arithmetic (eight columns at a time, the last few of a row one by one)."""
    torch.manual_seed(ffn + rows)
    k = 96
    gate_up = (torch.randn(2 * ffn, k) / k**0.5).bfloat16()
    x = torch.randn(rows, k)
    fused = amx.pack_swiglu(gate_up)
    assert fused.out_features == 2 * ffn
    act = fused(x)
    both = amx.pack(gate_up)(x)
    assert torch.equal(act, ops.silu_mul(both))
    gate, up = both[:, :ffn].double(), both[:, ffn:].double()
    torch.testing.assert_close(act.double(), gate * torch.sigmoid(gate) * up, rtol=1e-5, atol=1e-6)
    assert torch.equal(fused(x[-1:]), act[-1:]), "a row's result is its own"
    with pytest.raises(ValueError, match="equal rows"):
        amx.pack_swiglu(gate_up[1:])
