"""The flavor catalog: kinds of accelerator, what their chips can do and cost, how a task gets them.

Shipped defaults, overlaid at run time with the operator's `kind: Flavor` documents (see
`rainier.control.flavors`, which loads them from the database into `FLAVORS`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Flavor:
    """A kind of accelerator: what one chip can do, what it costs at list price, and how a task
    is handed its chips. Operators publish them as `kind: Flavor` documents."""

    name: str
    peak_tflops: float
    memory_gb: float
    list_usd_per_chip_hour: Decimal
    # how a task is handed its chips: a device variable, or "cpu" for an affinity of cores
    device_env: str = "cpu"
    # host memory a task may use per chip it holds, unless its spec says otherwise
    task_memory_gb_per_chip: float = 16.0
    # device indices per chip in `device_env` (a trn2 chip is 4 logical NeuronCores)
    devices_per_chip: int = 1
    # peak TFLOP/s per dtype; `peak_tflops` is the bf16 one (what MFU is measured against)
    peak_tflops_by_dtype: tuple[tuple[str, float], ...] = ()

    def device_ids(self, chip_ids: tuple[int, ...]) -> tuple[int, ...]:
        n = self.devices_per_chip
        return tuple(c * n + k for c in chip_ids for k in range(n))


def _f(name: str, bf16: float, mem: float, usd: str, env: str, host: float, per: int = 1) -> Flavor:
    return Flavor(name, bf16, mem, Decimal(usd), env, host, per, (("bf16", bf16),))


CUDA, NEURON, HIP = "CUDA_VISIBLE_DEVICES", "NEURON_RT_VISIBLE_CORES", "HIP_VISIBLE_DEVICES"
# What a fresh installation knows; an operator changes any of them, or adds others, with a
# `kind: Flavor` document (stored in the database), which wins over these.
DEFAULT_FLAVORS: dict[str, Flavor] = {
    f.name: f
    for f in (
        _f("h200", 989.0, 141.0, "4.50", CUDA, 200.0),
        _f("gb200", 2500.0, 192.0, "7.00", CUDA, 200.0),
        _f("trn2", 667.0, 96.0, "3.20", NEURON, 120.0, 4),
        _f("cpu", 0.1, 16.0, "0.05", "cpu", 16.0),
        _f("h100", 989.0, 80.0, "3.00", CUDA, 200.0),
        _f("mi300x", 1307.0, 192.0, "3.50", HIP, 200.0),
        _f("l4", 121.0, 24.0, "0.80", CUDA, 48.0),
        _f("trn1", 190.0, 32.0, "1.35", NEURON, 32.0, 2),
    )
}
# The catalog in force in this process: the defaults, then the operator's documents as the
# control plane loads them (`install_catalog`). Everything that needs a flavor reads it here.
FLAVORS: dict[str, Flavor] = dict(DEFAULT_FLAVORS)
_reload: list[Callable[[], None]] = []


def install_catalog(flavors: dict[str, Flavor], reload: Callable[[], None] | None = None) -> None:
    """Puts a catalog in force; `reload` is called when a document names a flavor the catalog
    does not hold (another server process may have just published it)."""
    FLAVORS.update(flavors)  # never empty in between: a request may be validating meanwhile
    for name in set(FLAVORS) - set(flavors):
        del FLAVORS[name]
    _reload[:] = [reload] if reload is not None else []


def check_flavor(flavor: str) -> None:
    if flavor not in FLAVORS and _reload:
        with contextlib.suppress(Exception):  # the catalog in force stands
            _reload[0]()
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; known: {', '.join(sorted(FLAVORS))}")


def flavor_of(doc: Any) -> Flavor:
    """The flavor a `kind: Flavor` document (`rainier.spec.FlavorSpec`) describes; MFU is
    measured against its bf16 peak, or its highest where it names no bf16."""
    peaks: dict[str, float] = doc.peak_tflops
    return Flavor(
        doc.name,
        peaks.get("bf16", max(peaks.values())),
        doc.memory_gb,
        doc.list_usd_per_chip_hour,
        doc.device_env,
        doc.task_memory_gb_per_chip,
        doc.devices_per_chip,
        tuple(sorted(peaks.items())),
    )
