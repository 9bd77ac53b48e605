"""Matrix products on weights reordered once, at load, into oneDNN's blocked layout.

`F.linear` on a CPU hands oneDNN (or MKL) a plain row-major weight, and at a serving step's
few dozen rows the library re-blocks the weight on every call: in bf16 on AMX that costs more
than the product itself (about 80 GFLOP/s at 16 rows for a 1024-wide layer, against 110-270
with the weight pre-blocked; in fp32 about 25-50 against 50-80). Reordered once, the weight
is read as it lies, and the product spreads over every torch thread, as `F.linear`'s does.
The reordered copy replaces the original, so memory does not double.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The row count oneDNN picks its blocking for: a decode step of a busy replica.
TYPICAL_ROWS = 16


def onednn_linear_available(dtype: torch.dtype) -> bool:
    """oneDNN's pre-blocked linear is in this PyTorch build and takes `dtype` on this CPU."""
    ops = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")):
        return False
    if dtype == torch.bfloat16:
        return bool(ops._is_mkldnn_bf16_supported())
    return dtype == torch.float32


@dataclass(frozen=True)
class OneDnnLinear:
    """`x @ weight.T (+ bias)` for 2-D `x` of the weight's dtype, on the pre-blocked weight."""

    weight: torch.Tensor  # oneDNN's opaque tensor
    bias: torch.Tensor | None
    out_features: int

    @classmethod
    def pack(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> OneDnnLinear:
        blocked = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), TYPICAL_ROWS)
        return cls(blocked, bias, weight.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), self.weight, self.bias, "none", [], ""
        )
        return out
