"""The weights of a fused projection (q/k/v, gate/up) as one matrix, for one product.

The modules keep separate weights, so checkpoints and the HF export keep their names, and
join them on each forward. Joined by `torch.cat`, that is a copy of the weights on every
step; weights allocated one after another in one storage (`side_by_side`, as bf16 working
copies are) are joined as that memory itself, and the gradient is handed back in slices of
the joined one.
"""

from __future__ import annotations

from typing import Any, cast

import torch


def joined(*weights: torch.Tensor) -> torch.Tensor:
    """The weights stacked along their first dimension. Under autocast each is cast to its
    dtype first: the join then copies half the bytes, and autocast finds the product's weight
    already cast rather than casting the float32 join once more."""
    device = weights[0].device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        weights = tuple(w.to(dtype) for w in weights)
    if _adjacent(weights):
        return cast(torch.Tensor, _Adjacent.apply(*weights))
    return torch.cat(weights)


def side_by_side(weights: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """Leaf copies of `weights` in `dtype`, one after another in one new storage, so that
    `joined` of them copies nothing."""
    store = torch.empty(sum(w.numel() for w in weights), dtype=dtype, device=weights[0].device)
    copies, start = [], 0
    for w in weights:
        view = store[start : start + w.numel()].view(w.shape)
        view.copy_(w.detach())
        copies.append(view.requires_grad_())
        start += w.numel()
    return copies


def _adjacent(weights: tuple[torch.Tensor, ...]) -> bool:
    """Whether the weights are contiguous, alike in dtype and trailing shape, and lie one
    right after another in one storage."""
    first = weights[0]
    if len(weights) < 2:
        return False
    storage, end = first.untyped_storage().data_ptr(), first.data_ptr()
    for w in weights:
        if (
            w.dtype != first.dtype
            or w.shape[1:] != first.shape[1:]
            or not w.is_contiguous()
            or w.untyped_storage().data_ptr() != storage
            or w.data_ptr() != end
        ):
            return False
        end += w.numel() * w.element_size()
    return True


class _Adjacent(torch.autograd.Function):
    """`torch.cat` of adjacent weights without the copy: the result is their memory."""

    @staticmethod
    def forward(ctx: Any, *weights: torch.Tensor) -> torch.Tensor:
        first = weights[0]
        ctx.rows = [w.shape[0] for w in weights]
        shape = (sum(ctx.rows), *first.shape[1:])
        return first.new_empty(0).set_(
            first.untyped_storage(), first.storage_offset(), shape, first.stride()
        )

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(grad.split(ctx.rows))
