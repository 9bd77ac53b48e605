"""Joining a fused projection's weights: a copy by `torch.cat`, or, for weights that lie side
by side in one storage, that memory itself, with the same values and gradients."""

from __future__ import annotations

import torch

from rainier.train.joined import joined, side_by_side


def weights(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, 8, generator=gen) for rows in (6, 2, 2)]


def test_side_by_side_copies_are_joined_without_a_copy_and_get_their_gradients() -> None:
    sources = weights(0)
    copies = side_by_side(sources, torch.float32)
    assert all(c.is_leaf and c.requires_grad for c in copies)
    assert all(torch.equal(c, s) for c, s in zip(copies, sources, strict=True))

    joint = joined(*copies)
    assert joint.data_ptr() == copies[0].data_ptr()
    reference = [s.clone().requires_grad_() for s in sources]
    expected = torch.cat(reference)
    assert torch.equal(joint, expected)

    x = torch.randn(3, 8)
    (x @ joint.T).square().sum().backward()
    (x @ expected.T).square().sum().backward()
    for copy, ref in zip(copies, reference, strict=True):
        assert copy.grad is not None and ref.grad is not None
        assert torch.equal(copy.grad, ref.grad)


def test_weights_apart_or_out_of_order_are_copied() -> None:
    apart = [w.requires_grad_() for w in weights(1)]
    assert joined(*apart).data_ptr() != apart[0].data_ptr()

    copies = side_by_side(weights(2), torch.float32)
    swapped = joined(copies[1], copies[0])
    assert swapped.data_ptr() not in {c.data_ptr() for c in copies}
    assert torch.equal(swapped, torch.cat([copies[1], copies[0]]))


def test_under_autocast_the_join_is_in_its_dtype() -> None:
    copies = side_by_side(weights(3), torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        joint = joined(*copies)
        cast_fp32 = joined(*weights(3))
    assert joint.dtype == cast_fp32.dtype == torch.bfloat16
    assert joint.data_ptr() == copies[0].data_ptr()
    assert torch.equal(joint, cast_fp32)
