"""Huge pages for the KV pool: the memory asks for them before it is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rainier.allocator import HUGE_PAGE, zeros_on_huge_pages


def vm_flags(address: int) -> list[str]:
    """The `VmFlags` of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    return []


@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage").is_dir(), reason="no transparent huge pages"
)
def test_a_large_pool_is_aligned_zeroed_and_advised() -> None:
    pool = zeros_on_huge_pages((3, 2, 1000, 2, 64), torch.float32)
    assert pool.shape == (3, 2, 1000, 2, 64) and pool.dtype == torch.float32
    assert pool.is_contiguous() and not pool.any()
    assert pool.data_ptr() % HUGE_PAGE == 0
    assert "hg" in vm_flags(pool.data_ptr())  # MADV_HUGEPAGE took
    pool[-1, -1, -1, -1, -1] = 1.0  # the last element is inside the advised memory
    assert pool.sum() == 1.0


def test_a_small_tensor_is_an_ordinary_one() -> None:
    small = zeros_on_huge_pages((4, 8), torch.float16)
    assert small.shape == (4, 8) and small.dtype == torch.float16 and not small.any()
