"""Memory for processes that run the same tensor step over and over: glibc's allocator
settings, and huge pages for the large pools a step reads at scattered places."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def keep_freed_memory() -> bool:
    """Let glibc keep the memory a step frees, for the next step to reuse.

    By default glibc serves every allocation over 128 KiB with a fresh mmap and hands the top
    of the heap back to the kernel once 128 KiB of it is free. A training or serving step
    allocates and frees tensors of the same sizes every time, so each step faults them all in
    again, page by page and zero-filled: thousands of page faults a step, several percent of a
    small model's step on a CPU. With these thresholds the heap keeps them and a steady step takes
    next to no page faults. The peak memory is the same; only returning it to the kernel
    between steps stops. A `MALLOC_*` setting in the environment is the user's choice and is
    left alone, and so is any libc without `mallopt`. True when the settings were applied.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB is glibc's largest mmap threshold on 64-bit; the heap above it is kept, up to 1 GiB.
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def release_freed_memory() -> bool:
    """Hand what `keep_freed_memory` kept back to the kernel, at the end of a phase that will
    not run again (a benchmark's round): on a virtual machine, pages another process then
    touches for the first time can cost it several times its run. True where it was done."""
    if not sys.platform.startswith("linux"):
        return False
    gc.collect()
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14


def zeros_on_huge_pages(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zeroed CPU tensor whose memory the kernel backs with 2 MiB pages where it can.

    A paged KV cache is read a block at a time at scattered places in a pool of hundreds of
    MiB; with 4 KiB pages nearly every block read misses the TLB, which covers a few MiB.
    Linux gives huge pages to memory that asks for them (`transparent_hugepage` set to
    `madvise`, the common default) before it is first touched, so the pool is aligned to
    2 MiB, advised, then zeroed. Where that cannot be done, it is an ordinary tensor."""
    import torch

    count, element = math.prod(shape), dtype.itemsize
    if not sys.platform.startswith("linux") or count * element < HUGE_PAGE:
        return torch.zeros(shape, dtype=dtype)
    spare = HUGE_PAGE // element
    raw = torch.empty(count + spare, dtype=dtype)
    skip = (-raw.data_ptr() % HUGE_PAGE) // element
    tensor = raw[skip : skip + count]
    try:
        madvise = ctypes.CDLL(None).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        length = -(-count * element // HUGE_PAGE) * HUGE_PAGE
        madvise(tensor.data_ptr(), length, MADV_HUGEPAGE)
    except (OSError, AttributeError):
        pass
    return tensor.zero_().view(shape)
