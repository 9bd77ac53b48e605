"""The fused training kernels against the PyTorch operators they stand in for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rainier.train.model as model_mod
from rainier.kernels.train_ops import TrainOps
from rainier.train.config import build_config
from rainier.train.model import Transformer, lm_loss

OPS = TrainOps.load()
pytestmark = pytest.mark.skipif(OPS is None, reason="no C compiler, or kernels turned off")

RTOL, ATOL = 1e-5, 1e-6


def ops() -> TrainOps:
    assert OPS is not None
    return OPS


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=ATOL * float(expected.abs().max()))


@pytest.mark.parametrize(("rows", "vocab"), [(1, 5), (7, 37), (33, 8), (64, 2048)])
def test_cross_entropy_matches_pytorch(rows: int, vocab: int) -> None:
    gen = torch.Generator().manual_seed(rows * vocab)
    logits = torch.randn(rows, vocab, generator=gen) * 4
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    ref_logits = logits.clone().requires_grad_()
    ref = F.cross_entropy(ref_logits, targets)
    ref.backward(torch.tensor(0.75))
    assert ref_logits.grad is not None

    loss, lse = ops().cross_entropy(logits, targets)
    close(loss, ref.detach())
    close(lse, torch.logsumexp(logits, -1))
    grad = ops().cross_entropy_backward(logits, targets, lse, 0.75 / rows)
    close(grad, ref_logits.grad)


def test_cross_entropy_rejects_a_target_outside_the_vocabulary() -> None:
    with pytest.raises(IndexError):
        ops().cross_entropy(torch.zeros(2, 10), torch.tensor([3, 10]))


@pytest.mark.parametrize("shape", [(1, 3), (5, 13), (2, 9, 24), (4, 768)])
def test_swiglu_matches_pytorch(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    gate_up = torch.randn(*shape[:-1], 2 * shape[-1], generator=gen) * 3
    gate_up.view(-1)[:4] = torch.tensor([-120.0, 120.0, -30.0, 30.0])[: gate_up.numel()]
    grad = torch.randn(*shape, generator=gen)
    ref_in = gate_up.clone().requires_grad_()
    gate, up = ref_in.chunk(2, dim=-1)
    ref = F.silu(gate) * up
    ref.backward(grad)
    assert ref_in.grad is not None

    close(ops().swiglu(gate_up), ref.detach())
    close(ops().swiglu_backward(gate_up, grad), ref_in.grad)


@pytest.mark.parametrize("shape", [(1, 7), (6, 19), (3, 5, 256)])
def test_rmsnorm_matches_pytorch(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen) * 2
    weight = 1 + torch.randn(shape[-1], generator=gen) / 4
    grad = torch.randn(*shape, generator=gen)
    ref_x, ref_w = x.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = ref_w * ref_x * torch.rsqrt(ref_x.pow(2).mean(-1, keepdim=True) + 1e-5)
    ref.backward(grad)
    assert ref_x.grad is not None and ref_w.grad is not None

    out, rstd = ops().rmsnorm(x, weight, 1e-5)
    close(out, ref.detach())
    grad_x, grad_w = ops().rmsnorm_backward(x, weight, rstd, grad)
    close(grad_x, ref_x.grad)
    close(grad_w, ref_w.grad)


@pytest.mark.parametrize(
    ("batch", "seq", "heads", "kv_heads", "head_dim"),
    [(1, 3, 1, 1, 6), (2, 5, 4, 2, 22), (2, 17, 4, 4, 64)],
)
def test_rotary_heads_match_pytorch(
    monkeypatch: pytest.MonkeyPatch, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int
) -> None:
    gen = torch.Generator().manual_seed(seq * head_dim)
    qkv = torch.randn(batch, seq, heads + 2 * kv_heads, head_dim, generator=gen)
    angles = torch.rand(seq, head_dim // 2, generator=gen) * 6
    cos, sin = angles.cos(), angles.sin()
    grads = (
        torch.randn(batch, heads, seq, head_dim, generator=gen),
        torch.randn(batch, kv_heads, seq, head_dim, generator=gen),
        torch.randn(batch, kv_heads, seq, head_dim, generator=gen),
    )
    monkeypatch.setattr(model_mod, "_kernels", lambda: None)
    ref_in = qkv.clone().requires_grad_()
    ref = model_mod._Heads.apply(ref_in, cos, sin, heads, kv_heads)
    torch.autograd.backward(ref, grads)
    assert ref_in.grad is not None

    for actual, expected in zip(
        ops().rotary_heads(qkv, cos, sin, heads, kv_heads), ref, strict=True
    ):
        close(actual, expected.detach())
    close(ops().rotary_heads_backward(*grads, cos, sin), ref_in.grad)


def tiny_model() -> Transformer:
    overrides = ["dim=72", "n_layers=2", "n_heads=4", "n_kv_heads=2", "ffn_dim=100"]
    overrides += ["vocab_size=263", "max_seq_len=32"]
    torch.manual_seed(0)
    return Transformer(build_config("tiny", overrides))


def loss_and_grads(
    model: Transformer, tokens: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grads[name] = p.grad.clone()
    return loss.detach(), grads


def test_model_loss_and_grads_match_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    tokens = torch.randint(
        0, model.cfg.vocab_size, (3, 30), generator=torch.Generator().manual_seed(1)
    )
    fused_loss, fused = loss_and_grads(model, tokens)
    again_loss, again = loss_and_grads(model, tokens)
    monkeypatch.setattr(model_mod, "_kernels", lambda: None)
    ref_loss, ref = loss_and_grads(model, tokens)

    close(fused_loss, ref_loss)
    assert torch.equal(fused_loss, again_loss)
    for name, grad in ref.items():
        close(fused[name], grad, rtol=1e-4)
        assert torch.equal(fused[name], again[name]), f"{name} differs between identical steps"


def test_other_dtypes_take_the_pytorch_path() -> None:
    model = tiny_model().double()
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 9))
    loss, grads = loss_and_grads(model, tokens)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(g.dtype == torch.float64 for g in grads.values())


@pytest.mark.parametrize(
    ("rows", "cols", "first_row"), [(1, 1, 0), (5, 13, 8), (64, 192, 128), (3, 20, 0)]
)
def test_causal_softmax_and_its_gradient_match_pytorch(
    rows: int, cols: int, first_row: int
) -> None:
    gen = torch.Generator().manual_seed(rows * cols + first_row)
    scores = torch.randn(3, rows, cols, generator=gen) * 5
    mask = torch.full((first_row + rows, cols), float("-inf")).triu_(1)[first_row:]
    ref = torch.softmax(scores * 0.3 + mask, -1)
    weights = scores.clone()
    ops().causal_softmax_(weights, first_row, 0.3)
    close(weights, ref)

    grad_w = torch.randn(3, rows, cols, generator=gen)
    delta = torch.randn(3, rows + 4, 1, generator=gen)
    expected = (grad_w - delta[:, 2 : 2 + rows]) * ref * 0.7
    ops().softmax_grad_(grad_w, weights, delta[:, 2 : 2 + rows], 0.7)
    close(grad_w, expected)


def test_torch_compile_traces_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2, 8)
    assert model_mod._fused(x) is not None
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert model_mod._fused(x) is None


def every_kernel(seed: int) -> list[torch.Tensor]:
    """Each kernel's outputs on inputs large enough to be split over threads."""
    gen = torch.Generator().manual_seed(seed)
    rows, width, vocab = 300, 264, 1000
    logits = torch.randn(rows, vocab, generator=gen) * 3
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    loss, lse = ops().cross_entropy(logits, targets)
    out = [loss, lse, ops().cross_entropy_backward(logits, targets, lse, 0.01)]
    gate_up = torch.randn(rows, 2 * width, generator=gen)
    grad = torch.randn(rows, width, generator=gen)
    out += [ops().swiglu(gate_up), ops().swiglu_backward(gate_up, grad)]
    x, weight = torch.randn(rows, width, generator=gen), torch.rand(width, generator=gen) + 0.5
    normed, rstd = ops().rmsnorm(x, weight, 1e-5)
    out += [normed, rstd, *ops().rmsnorm_backward(x, weight, rstd, grad)]
    qkv = torch.randn(2, 70, 8, 32, generator=gen)
    angles = torch.rand(70, 16, generator=gen)
    heads = ops().rotary_heads(qkv, angles.cos(), angles.sin(), 4, 2)
    out += [*heads, ops().rotary_heads_backward(*heads, angles.cos(), angles.sin())]
    scores = torch.randn(8, 64, 192, generator=gen)
    ops().causal_softmax_(scores, 128, 0.2)
    grad_scores = torch.randn(8, 64, 192, generator=gen)
    ops().softmax_grad_(grad_scores, scores, torch.randn(8, 64, 1, generator=gen), 0.2)
    return [*out, scores, grad_scores]


def test_kernels_give_the_same_bits_on_one_thread_as_on_three() -> None:
    """Rows shared among threads: each row is computed as it is alone, and the reductions
    (the loss, the norm's weight gradient) add up in a fixed order whatever the count."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = every_kernel(7)
        torch.set_num_threads(3)
        shared = every_kernel(7)
    finally:
        torch.set_num_threads(threads)
    for i, (a, b) in enumerate(zip(alone, shared, strict=True)):
        assert torch.equal(a, b), f"output {i} differs between one thread and three"


def test_norm_weight_gradient_over_many_row_groups_matches_pytorch() -> None:
    gen = torch.Generator().manual_seed(3)
    x, grad = torch.randn(1000, 96, generator=gen), torch.randn(1000, 96, generator=gen)
    weight = torch.rand(96, generator=gen) + 0.5
    ref_w = weight.clone().requires_grad_()
    (ref_w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)).backward(grad)
    assert ref_w.grad is not None
    _, rstd = ops().rmsnorm(x, weight, 1e-5)
    close(ops().rmsnorm_backward(x, weight, rstd, grad)[1], ref_w.grad, rtol=1e-4)


def bf16_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Within one or two bf16 roundings of the float32 result on the same inputs."""
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, rtol=1.6e-2, atol=1e-2)


def test_swiglu_in_bf16_rounds_the_float32_result_once() -> None:
    gen = torch.Generator().manual_seed(11)
    gate_up = (torch.randn(5, 2 * 37, generator=gen) * 3).bfloat16()
    grad = torch.randn(5, 37, generator=gen).bfloat16()
    out = ops().swiglu(gate_up)
    bf16_close(out, ops().swiglu(gate_up.float()))
    assert torch.equal(out, ops().swiglu(gate_up.float()).bfloat16())
    bf16_close(
        ops().swiglu_backward(gate_up, grad),
        ops().swiglu_backward(gate_up.float(), grad.float()),
    )


def test_rotary_heads_in_bf16_match_float32() -> None:
    gen = torch.Generator().manual_seed(12)
    qkv = torch.randn(2, 9, 4 + 2 * 2, 24, generator=gen).bfloat16()
    angles = torch.rand(9, 12, generator=gen) * 6
    cos, sin = angles.cos(), angles.sin()
    heads = ops().rotary_heads(qkv, cos, sin, 4, 2)
    for actual, expected in zip(
        heads, ops().rotary_heads(qkv.float(), cos, sin, 4, 2), strict=True
    ):
        bf16_close(actual, expected)
    grads = [torch.randn(h.shape, generator=gen).bfloat16() for h in heads]
    bf16_close(
        ops().rotary_heads_backward(*grads, cos, sin),
        ops().rotary_heads_backward(*(g.float() for g in grads), cos, sin),
    )


def test_bf16_autocast_steps_use_the_kernels_and_follow_the_pytorch_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model()
    tokens = torch.randint(
        0, model.cfg.vocab_size, (2, 30), generator=torch.Generator().manual_seed(4)
    )
    calls: list[str] = []
    real = model_mod._kernels()
    assert real is not None
    original = real.swiglu
    monkeypatch.setattr(real, "swiglu", lambda x: calls.append(str(x.dtype)) or original(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused_loss, fused = loss_and_grads(model, tokens)
    assert "torch.bfloat16" in calls
    monkeypatch.setattr(model_mod, "_kernels", lambda: None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss, ref = loss_and_grads(model, tokens)
    torch.testing.assert_close(fused_loss, ref_loss, rtol=2e-2, atol=2e-2)
    for name, grad in ref.items():
        torch.testing.assert_close(fused[name], grad, rtol=0.1, atol=0.1 * float(grad.abs().max()))


def test_rmsnorm_writing_bf16_rounds_the_float32_result_once() -> None:
    """Under bf16 autocast the norm writes its output in bf16 and takes its gradient so: the
    same bits as the float32 kernel's output rounded, and the float32 backward of the widened
    gradient (the weight's exactly, the input's to the last bit the compiler's fusing of
    multiply-adds may move)."""
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(70, 44, generator=gen) * 2  # row groups of 32, a tail of 4 columns
    weight = torch.rand(44, generator=gen) + 0.5
    out, rstd = ops().rmsnorm(x, weight, 1e-5, torch.bfloat16)
    wide, wide_rstd = ops().rmsnorm(x, weight, 1e-5)
    assert torch.equal(out, wide.bfloat16()) and torch.equal(rstd, wide_rstd)
    grad = torch.randn(70, 44, generator=gen).bfloat16()
    grad_x, grad_weight = ops().rmsnorm_backward(x, weight, rstd, grad)
    want_x, want_weight = ops().rmsnorm_backward(x, weight, rstd, grad.float())
    assert torch.equal(grad_weight, want_weight)
    torch.testing.assert_close(grad_x, want_x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("rows", "cols", "first_row"), [(1, 1, 0), (5, 13, 8), (64, 192, 128)])
def test_causal_softmax_and_its_gradient_in_bf16_round_the_float32_results_once(
    rows: int, cols: int, first_row: int
) -> None:
    gen = torch.Generator().manual_seed(rows * cols + first_row)
    scores = (torch.randn(3, rows, cols, generator=gen) * 5).bfloat16()
    weights, wide = scores.clone(), scores.float()
    ops().causal_softmax_(weights, first_row, 0.3)
    ops().causal_softmax_(wide, first_row, 0.3)
    assert torch.equal(weights, wide.bfloat16())

    grad = torch.randn(3, rows, cols, generator=gen).bfloat16()
    delta = torch.randn(3, rows + 4, 1, generator=gen)
    wide_grad = grad.float()
    ops().softmax_grad_(grad, weights, delta[:, 2 : 2 + rows], 0.7)
    ops().softmax_grad_(wide_grad, weights.float(), delta[:, 2 : 2 + rows], 0.7)
    assert torch.equal(grad, wide_grad.bfloat16())
