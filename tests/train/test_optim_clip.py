"""Gradient clipping without the multiply by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rainier.train.optim import clip_gradients


def model_with_grads(scale: float) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 4))
    b = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 4))
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 16)
    for m in (a, b):
        (m(x).sum() * scale).backward()
    return a, b


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, float("inf")])
def test_clipping_matches_pytorch_bit_for_bit(scale: float) -> None:
    ours, theirs = model_with_grads(scale)
    norm = clip_gradients(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    torch.testing.assert_close(norm, expected, equal_nan=True, rtol=0, atol=0)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, equal_nan=True, rtol=0, atol=0)


def test_gradients_under_the_limit_are_left_as_they_are() -> None:
    ours, _ = model_with_grads(1e-3)
    before = [p.grad.clone() for p in ours.parameters() if p.grad is not None]
    pointers = [p.grad.data_ptr() for p in ours.parameters() if p.grad is not None]
    assert float(clip_gradients(ours, 1.0)) < 1.0
    after = [p.grad for p in ours.parameters() if p.grad is not None]
    assert [g.data_ptr() for g in after] == pointers
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
