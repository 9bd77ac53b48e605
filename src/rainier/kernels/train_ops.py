"""Typed entry to `train_ops.c`: fused element-wise passes of a training step on a CPU.

Float32 CPU tensors, and bf16 ones (autocast's activations) for SwiGLU and the rotary head
split; on a GPU, and for the other kernels under bf16, PyTorch's operators are what the model
uses. Inputs are made contiguous here (a no-op for the activations a step passes), outputs
are new tensors, and nothing is written into an input.
"""

from __future__ import annotations

import ctypes

import torch

from rainier.kernels import F32, I64, PTR, bind, load, require_float32_cpu


def require_cpu(*tensors: torch.Tensor) -> None:
    """float32 or bf16 CPU tensors, all of one dtype."""
    if any(t.dtype not in (torch.float32, torch.bfloat16) or t.device.type != "cpu"
           for t in tensors) or len({t.dtype for t in tensors}) != 1:  # fmt: skip
        raise ValueError("this kernel takes float32 or bf16 CPU tensors of one dtype")


class TrainOps:
    """Forward and backward of cross-entropy, SwiGLU, RMSNorm, the rotary head split and the
    softmax of causal attention's blocks of scores."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._ce_fwd = bind(lib, "cross_entropy_forward", ctypes.c_int,
                             PTR, PTR, PTR, PTR, I64, I64)  # fmt: skip
        self._ce_bwd = bind(lib, "cross_entropy_backward", None,
                             PTR, PTR, PTR, PTR, I64, I64, F32)  # fmt: skip
        self._swiglu_fwd = bind(lib, "swiglu_forward", None, PTR, PTR, I64, I64)
        self._swiglu_bwd = bind(lib, "swiglu_backward", None, PTR, PTR, PTR, I64, I64)
        rms_fwd_args = (PTR, PTR, PTR, PTR, I64, I64, F32)
        self._rms_fwd = {
            torch.float32: bind(lib, "rmsnorm_forward", None, *rms_fwd_args),
            torch.bfloat16: bind(lib, "rmsnorm_forward_bf16", None, *rms_fwd_args),
        }
        rms_bwd_args = (PTR, PTR, PTR, PTR, PTR, PTR, I64, I64)
        self._rms_bwd = {
            torch.float32: bind(lib, "rmsnorm_backward", ctypes.c_int, *rms_bwd_args),
            torch.bfloat16: bind(lib, "rmsnorm_backward_bf16", ctypes.c_int, *rms_bwd_args),
        }
        heads_args = (PTR,) * 6 + (I64,) * 5
        self._heads_fwd = {
            torch.float32: bind(lib, "rotary_heads_forward", None, *heads_args),
            torch.bfloat16: bind(lib, "rotary_heads_forward_bf16", None, *heads_args),
        }
        self._heads_bwd = {
            torch.float32: bind(lib, "rotary_heads_backward", None, *heads_args),
            torch.bfloat16: bind(lib, "rotary_heads_backward_bf16", None, *heads_args),
        }
        self._swiglu_fwd_bf16 = bind(lib, "swiglu_forward_bf16", None, PTR, PTR, I64, I64)
        self._swiglu_bwd_bf16 = bind(lib, "swiglu_backward_bf16", None,
                                     PTR, PTR, PTR, I64, I64)  # fmt: skip
        softmax_args = (PTR, I64, I64, I64, I64, F32)
        self._causal_softmax = {
            torch.float32: bind(lib, "causal_softmax", None, *softmax_args),
            torch.bfloat16: bind(lib, "causal_softmax_bf16", None, *softmax_args),
        }
        grad_args = (PTR, PTR, PTR, I64, I64, I64, I64, F32)
        self._softmax_grad = {
            torch.float32: bind(lib, "softmax_grad", None, *grad_args),
            torch.bfloat16: bind(lib, "softmax_grad_bf16", None, *grad_args),
        }

    @classmethod
    def load(cls) -> TrainOps | None:
        lib = load("train_ops")
        return cls(lib) if lib is not None else None

    def cross_entropy(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss over the rows of `logits` [rows, vocab] (a 0-d tensor) and each row's
        log-sum-exp, which `cross_entropy_backward` takes."""
        require_float32_cpu(logits)
        rows, vocab = logits.shape
        logits = logits.contiguous()
        targets = targets.to(torch.int64).contiguous()
        lse = torch.empty(rows, dtype=torch.float32)
        total = ctypes.c_double()
        status = self._ce_fwd(
            logits.data_ptr(), targets.data_ptr(), lse.data_ptr(), ctypes.byref(total), rows, vocab
        )
        if status == -2:
            raise MemoryError("cross_entropy could not allocate its row losses")
        if status != 0:
            raise IndexError(f"cross_entropy: a target is outside [0, {vocab})")
        return torch.tensor(total.value / max(rows, 1), dtype=torch.float32), lse

    def cross_entropy_backward(
        self, logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """scale * (softmax(logits) - onehot(targets)), one pass over the logits."""
        rows, vocab = logits.shape
        logits = logits.contiguous()
        targets = targets.to(torch.int64).contiguous()
        grad = torch.empty((rows, vocab), dtype=torch.float32)
        self._ce_bwd(
            logits.data_ptr(), targets.data_ptr(), lse.data_ptr(), grad.data_ptr(), rows, vocab,
            scale,
        )  # fmt: skip
        return grad

    def swiglu(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up over `gate_up` [..., 2 * width], gate the first half of each row;
        float32 or bf16."""
        require_cpu(gate_up)
        gate_up = gate_up.contiguous()
        width = gate_up.shape[-1] // 2
        out = gate_up.new_empty((*gate_up.shape[:-1], width))
        fn = self._swiglu_fwd if gate_up.dtype == torch.float32 else self._swiglu_fwd_bf16
        fn(gate_up.data_ptr(), out.data_ptr(), out.numel() // max(width, 1), width)
        return out

    def swiglu_backward(self, gate_up: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        require_cpu(gate_up, grad)
        gate_up, grad = gate_up.contiguous(), grad.contiguous()
        width = gate_up.shape[-1] // 2
        out = torch.empty_like(gate_up)
        rows = grad.numel() // max(width, 1)
        fn = self._swiglu_bwd if gate_up.dtype == torch.float32 else self._swiglu_bwd_bf16
        fn(gate_up.data_ptr(), grad.data_ptr(), out.data_ptr(), rows, width)
        return out

    def rmsnorm(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        out_dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """weight * x / rms(x) over the last dimension of float32 `x`, written as `out_dtype`
        (bf16 for a product under autocast to take), and each row's 1 / rms."""
        require_float32_cpu(x, weight)
        x, weight = x.contiguous(), weight.contiguous()
        dim = x.shape[-1]
        rows = x.numel() // max(dim, 1)
        out = torch.empty(x.shape, dtype=out_dtype)
        rstd = x.new_empty((*x.shape[:-1], 1))
        self._rms_fwd[out_dtype](x.data_ptr(), weight.data_ptr(), out.data_ptr(), rstd.data_ptr(), rows, dim,
                      eps)  # fmt: skip
        return out, rstd

    def rmsnorm_backward(
        self, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradients of x and of the weight; `grad` float32 or bf16 (the norm's output's)."""
        require_float32_cpu(x, weight, rstd)
        require_cpu(grad)
        x, weight, grad = x.contiguous(), weight.contiguous(), grad.contiguous()
        rstd = rstd.contiguous()
        dim = x.shape[-1]
        rows = x.numel() // max(dim, 1)
        grad_x, grad_weight = torch.empty_like(x), torch.empty_like(weight)
        status = self._rms_bwd[grad.dtype](
            x.data_ptr(), weight.data_ptr(), rstd.data_ptr(), grad.data_ptr(), grad_x.data_ptr(),
            grad_weight.data_ptr(), rows, dim,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("rmsnorm_backward could not allocate its accumulators")
        return grad_x, grad_weight

    def rotary_heads(
        self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`qkv` [batch, seq, heads + 2 kv_heads, head_dim] as q, k, v [batch, heads, seq,
        head_dim], q and k rotated by `cos`/`sin` [seq, head_dim / 2], half-split layout;
        `qkv` float32 or bf16, the tables float32."""
        require_cpu(qkv)
        require_float32_cpu(cos, sin)
        qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
        b, t, _, d = qkv.shape
        q = qkv.new_empty((b, heads, t, d))
        k, v = qkv.new_empty((b, kv_heads, t, d)), qkv.new_empty((b, kv_heads, t, d))
        self._heads_fwd[qkv.dtype](
            qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), q.data_ptr(), k.data_ptr(),
            v.data_ptr(), b, t, heads, kv_heads, d,
        )  # fmt: skip
        return q, k, v

    def rotary_heads_backward(
        self,
        grad_q: torch.Tensor,
        grad_k: torch.Tensor,
        grad_v: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """The gradient of the fused projection's output [batch, seq, heads + 2 kv_heads,
        head_dim]: q and k rotated back."""
        require_cpu(grad_q, grad_k, grad_v)
        require_float32_cpu(cos, sin)
        grad_q, grad_k, grad_v = grad_q.contiguous(), grad_k.contiguous(), grad_v.contiguous()
        cos, sin = cos.contiguous(), sin.contiguous()
        b, heads, t, d = grad_q.shape
        kv_heads = grad_k.shape[1]
        grad = grad_q.new_empty((b, t, heads + 2 * kv_heads, d))
        self._heads_bwd[grad_q.dtype](
            grad_q.data_ptr(), grad_k.data_ptr(), grad_v.data_ptr(), cos.data_ptr(),
            sin.data_ptr(), grad.data_ptr(), b, t, heads, kv_heads, d,
        )  # fmt: skip
        return grad

    def causal_softmax_(self, scores: torch.Tensor, first_row: int, scale: float) -> None:
        """In place over contiguous `scores` [batch, rows, cols], float32 or bf16: row i is
        query position `first_row + i`, which sees keys up to itself; softmax(scale * scores)
        over those, 0 over the rest."""
        require_cpu(scores)
        if not scores.is_contiguous():
            raise ValueError("causal_softmax_ works in place on a contiguous tensor")
        batch, rows, cols = scores.shape
        self._causal_softmax[scores.dtype](scores.data_ptr(), batch, rows, cols, first_row, scale)

    def softmax_grad_(
        self, grad: torch.Tensor, weights: torch.Tensor, delta: torch.Tensor, scale: float = 1.0
    ) -> None:
        """grad = (grad - delta) * weights * scale in place, over contiguous [batch, rows, cols]
        blocks, float32 or bf16; `delta` [batch, rows, 1], float32 whatever they are, may be a
        slice of a longer tensor along rows."""
        require_cpu(grad, weights)
        require_float32_cpu(delta)
        if not (grad.is_contiguous() and weights.is_contiguous()) or delta.stride(1) != 1:
            raise ValueError("softmax_grad_ needs contiguous blocks and delta's rows adjacent")
        if grad.shape != weights.shape or delta.shape != (*grad.shape[:2], 1):
            raise ValueError("softmax_grad_: grad, weights and delta do not match")
        batch, rows, cols = grad.shape
        self._softmax_grad[grad.dtype](
            grad.data_ptr(), weights.data_ptr(), delta.data_ptr(), delta.stride(0), batch, rows,
            cols, scale,
        )  # fmt: skip
