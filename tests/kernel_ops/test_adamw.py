"""AdamW from bf16 gradients against `torch.optim.AdamW` on the same gradients widened."""

from __future__ import annotations

import pytest
import torch

from rainier.kernels.adamw import AdamWKernel

BETAS = (0.9, 0.95)


@pytest.mark.parametrize("n", [1, 7, 8, 8191, 8192 * 3 + 5])
@pytest.mark.parametrize("grad_scale", [1.0, 0.3])
def test_steps_match_torch_adamw(adamw: AdamWKernel, n: int, grad_scale: float) -> None:
    torch.manual_seed(n)
    param = torch.randn(n)
    initial = param.clone()
    reference = param.clone().requires_grad_()
    opt = torch.optim.AdamW([reference], lr=1e-2, betas=BETAS, weight_decay=0.1)
    exp_avg, exp_avg_sq = torch.zeros(n), torch.zeros(n)
    working = torch.empty(n, dtype=torch.bfloat16)
    for step in range(1, 6):
        grad = torch.randn(n).bfloat16()
        reference.grad = grad.float() * grad_scale
        opt.step()
        adamw.step(
            param, exp_avg, exp_avg_sq, grad, working, step=step, lr=1e-2, betas=BETAS,
            eps=1e-8, weight_decay=0.1, grad_scale=grad_scale,
        )  # fmt: skip
        state = opt.state[reference]
        torch.testing.assert_close(param, reference.detach(), rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(exp_avg, state["exp_avg"], rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(exp_avg_sq, state["exp_avg_sq"], rtol=2e-6, atol=1e-6)
        assert torch.equal(working, param.bfloat16()), "the copy is the master rounded"
    assert not torch.equal(param, initial), "the steps moved nothing"


@pytest.mark.parametrize("n", [0, 1, 9, 8192 * 5 + 3])
def test_sum_of_squares_of_a_bf16_gradient(adamw: AdamWKernel, n: int) -> None:
    grad = (torch.randn(n) * 50).bfloat16()
    expected = float((grad.double() ** 2).sum())
    assert adamw.sum_squares(grad) == pytest.approx(expected, rel=2e-5, abs=1e-12)


def test_refuses_what_it_would_misread(adamw: AdamWKernel) -> None:
    f32, bf = torch.zeros(8), torch.zeros(8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        adamw.step(f32, f32.clone(), f32.clone(), f32.clone(), bf, step=1, lr=1e-3,
                   betas=BETAS, eps=1e-8, weight_decay=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="one size"):
        adamw.step(f32, f32.clone(), f32.clone(), bf[:4], bf, step=1, lr=1e-3,
                   betas=BETAS, eps=1e-8, weight_decay=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="contiguous"):
        adamw.sum_squares(torch.zeros(8, 2, dtype=torch.bfloat16).t())
