"""Small C kernels for the CPU paths, compiled on first use with the machine's C compiler.

PyTorch's CPU operators cover neither attention that reads a paged KV cache in place nor the
element-wise chains of a small model's step as one pass; composed from operators, both copy
and re-read memory that a loop written for the purpose touches once. A serving step's matrix
products have a few dozen rows, where a general GEMM spends much of its time re-packing its
operands; `linear.c` packs the weights once, and `decoder.c` runs a whole forward pass on
these kernels as one call. Each kernel is plain C (no Python or PyTorch headers, so it builds
in well under a second), called through `ctypes` with raw pointers, and has a PyTorch
equivalent that is used when no compiler is found or `RAINIER_KERNELS=0` is set. Tests hold
the two to the same results.

Loops over many rows run on PyTorch's own OpenMP threads (`parallel.h`): the library is
built with `-fopenmp` and binds to the OpenMP runtime PyTorch has already loaded. A compiler
without OpenMP builds it single-threaded.

The shared object is built for this CPU (`-march=native`) into a per-user cache keyed by the
sources beside it, the flags and the CPU's feature flags, so a home directory shared between
different machines never runs code built for another one. Builds go to a temporary name and
are renamed into place, so concurrent processes (a replica per core, DDP ranks) never load a
torn file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCES = Path(__file__).parent
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC")
OPENMP = "-fopenmp"


# The C types the kernels' signatures use: pointers, sizes and float scalars.
PTR, I64, F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


def bind(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
    """`lib.name` with its C signature declared, so ctypes converts (and refuses) arguments."""
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn  # type: ignore[no-any-return]


def require_float32_cpu(*tensors: torch.Tensor, contiguous: bool = False) -> None:
    """Refuses what the kernels would misread through a raw pointer."""
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise ValueError("the C kernels take float32 CPU tensors")
        if contiguous and not t.is_contiguous():
            raise ValueError("the C kernels take contiguous tensors here")


def enabled() -> bool:
    return os.environ.get("RAINIER_KERNELS", "1") not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    configured = os.environ.get("RAINIER_KERNEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rainier" / "kernels"


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    configured = os.environ.get("CC")
    candidates = [configured] if configured else ["cc", "gcc", "clang"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library `name` (`name.c` beside this module), or None when kernels
    are turned off or it cannot be built here; the reason is logged once."""
    if not enabled():
        return None
    source = SOURCES / f"{name}.c"
    compiler = _compiler()
    if compiler is None:
        log.warning("no C compiler found; %s runs on PyTorch operators", name)
        return None
    # Every source, not only this one: a kernel may include the others' code, not just headers.
    texts = [source.read_bytes(), *(f.read_bytes() for f in sorted(SOURCES.glob("*.[ch]")))]
    settings = [" ".join(FLAGS), OPENMP, compiler, _cpu_features()]
    key = hashlib.sha256(b"\0".join([*texts, *(s.encode() for s in settings)])).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if not target.is_file():
        try:
            _build(compiler, source, target)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not build %s (%s); it runs on PyTorch operators", name, exc)
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        log.warning("could not load %s (%s); it runs on PyTorch operators", target, exc)
        return None


def _build(compiler: str, source: Path, target: Path) -> None:
    """Builds with OpenMP, or without it where the compiler has none (one thread then)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        for extra in ([OPENMP], []):
            done = subprocess.run(
                [compiler, *FLAGS, *extra, "-o", partial, str(source), "-lm"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode == 0:
                break
            if extra:
                log.warning("%s builds without OpenMP: %s", source.name, done.stderr[-500:])
        if done.returncode != 0:
            raise subprocess.SubprocessError(done.stderr.strip()[-2000:])
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
