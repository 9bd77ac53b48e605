"""glibc allocator settings for processes that run the same tensor step over and over."""

from __future__ import annotations

import ctypes
import os
import sys


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
