"""AdamW and its learning-rate schedule.

The schedule is a pure function of the step, so resuming needs only the step to be exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Schedule:
    """Linear warmup from lr/warmup to lr, then cosine decay to lr * min_ratio at `steps`."""

    lr: float
    warmup_steps: int
    steps: int
    min_ratio: float = 0.1

    def at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.lr * self.min_ratio
        return floor + 0.5 * (self.lr - floor) * (1.0 + math.cos(math.pi * progress))


def adamw(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """Decay matrices only: shrinking norm gains towards zero only hurts.

    The fused kernel is used where this torch has one for the parameters' device.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_`'s result and effect, without its multiply where it would scale by 1:
    PyTorch multiplies every gradient by the clamped coefficient whatever it is, a full pass
    over the gradients (as many bytes as the weights) on each step of a run whose norm is
    under the limit, which on a CPU is most steps. On a GPU, where asking whether the norm is
    over the limit would wait for the device, the plain call runs."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params or params[0].device.type != "cpu":
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if not float(max_norm / (norm + 1e-6)) >= 1.0:  # also where the norm is not finite
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm
