"""Which matrix products a model runs on, decided by timing both on its own weights.

Two ways to run a float32 forward on a CPU, or a bf16 one on a CPU with AMX: `decoder.c`, the
whole pass as one C call on weights packed for its own products (float32 panels, or bf16 AMX
tiles), or the C element-wise kernels called from
Python around oneDNN's products on pre-blocked weights. The first saves the per-operator cost
of Python (some microseconds a call, a dozen calls a layer), which is most of a small model's
step; the second has the faster product at large widths, where the products are most of the
step. Where the crossing lies depends on the CPU and on the thread count, so it is measured
once, at load, on the first layer's weights at a decode step's row count, not guessed from
the model's size. `RAINIER_PRODUCTS=packed` or `=onednn` skips the timing and takes that
way (tests, and an operator pinning a replica's behaviour).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rainier.kernels.linear import LinearKernel
from rainier.kernels.linear_amx import AmxLinearKernel
from rainier.serve.onednn_linear import TYPICAL_ROWS, OneDnnLinear

# What calling a layer's kernels and products one by one from Python costs beyond the work,
# per layer: a dozen calls, their outputs' allocation and the casts between them. Measured on
# a 4-layer model 256 wide at 16 decoding rows: steps of 3.0 ms that way against 1.8 ms in one
# call, 0.3 ms a layer, of which the products' own difference is 0.1 ms.
PYTHON_COST_PER_LAYER_S = 250e-6
REPEATS = 7


@dataclass(frozen=True)
class ProductTimes:
    """Seconds for one decode step's products of one layer, each way."""

    packed_s: float
    onednn_s: float

    @property
    def decoder_wins(self) -> bool:
        return self.packed_s <= self.onednn_s + PYTHON_COST_PER_LAYER_S


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _best_of_each(first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """The best time of each, taken in turns: a machine's speed drifts by more than the
    two differ at large widths, and timed one after the other, the drift picked the winner."""
    first()
    second()
    best = [float("inf"), float("inf")]
    for _ in range(REPEATS):
        best[0] = min(best[0], _seconds(first))
        best[1] = min(best[1], _seconds(second))
    return best[0], best[1]


def decoder_wins(
    weights: list[torch.Tensor], packer: LinearKernel | AmxLinearKernel
) -> tuple[bool, str]:
    """Whether the packed products (and so the one-call decoder) win, and why, for the log."""
    pinned = os.environ.get("RAINIER_PRODUCTS", "").strip().lower()
    if pinned in ("packed", "onednn"):
        return pinned == "packed", f"RAINIER_PRODUCTS={pinned}"
    times = time_products(weights, packer)
    reason = f"one layer's products: packed {times.packed_s * 1e6:.0f} us, oneDNN "
    return times.decoder_wins, reason + f"{times.onednn_s * 1e6:.0f} us"


def time_products(
    weights: list[torch.Tensor], packer: LinearKernel | AmxLinearKernel
) -> ProductTimes:
    """Both ways of multiplying `TYPICAL_ROWS` rows by each of `weights` (one layer's,
    [out, in] as stored), on copies: the model's own tensors are not touched. Each way
    gets its rows as the forward hands them over: float32 to the packed products, the
    weights' dtype to oneDNN's."""
    packed = [packer.pack(w) for w in weights]
    blocked = [OneDnnLinear.pack(w.clone()) for w in weights]
    inputs = [torch.randn(TYPICAL_ROWS, w.shape[1]) for w in weights]
    onednn_inputs = [x.to(w.dtype) for x, w in zip(inputs, weights, strict=True)]

    def run(
        products: list[Callable[[torch.Tensor], torch.Tensor]], rows: list[torch.Tensor]
    ) -> Callable[[], None]:
        def call() -> None:
            for product, x in zip(products, rows, strict=True):
                product(x)

        return call

    return ProductTimes(
        *_best_of_each(run(list(packed), inputs), run(list(blocked), onednn_inputs))
    )
