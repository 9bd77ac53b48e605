"""A decoder-only transformer of the Llama family, small enough to read in one sitting.

Module and parameter names follow Hugging Face's `LlamaForCausalLM` (minus its `model.` prefix)
and rotary positions use the same half-split layout, so export is a rename, not a permutation.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from rainier.kernels.train_ops import TrainOps
from rainier.train.config import ModelShape
from rainier.train.joined import joined

Heads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@functools.cache
def _kernels() -> TrainOps | None:
    return TrainOps.load()


def _fused(*tensors: torch.Tensor, bf16: bool = False) -> TrainOps | None:
    """The C kernels when every tensor is float32 on the CPU (or, for the kernels that take
    it, `bf16`, all bf16) and they built here: each fuses an element-wise chain that PyTorch
    runs as several full passes over an activation. Not under `torch.compile`, which fuses
    those chains itself and cannot trace a ctypes call."""
    if torch.compiler.is_compiling() or not all(t.device.type == "cpu" for t in tensors):
        return None
    dtypes = {t.dtype for t in tensors}
    if dtypes == {torch.float32} or (bf16 and dtypes == {torch.bfloat16}):
        return _kernels()
    return None


def _product_input_dtype(x: torch.Tensor) -> torch.dtype:
    """bf16 under autocast to bf16 on `x`'s device (what its products cast their input to),
    else float32."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, _RMSNorm.apply(x, self.weight, self.eps))


class _RMSNorm(torch.autograd.Function):
    """RMSNorm with a hand-written backward.

    Autograd through the plain formula spends most of the norm's time in `pow`'s backward
    and in broadcasts it does not need; written out, the backward is a few plain passes over
    the activations, half the time on a CPU. The forward normalises in fp32 even under
    autocast: the mean of squares loses too much in bf16. Under bf16 autocast the kernel
    writes its output in bf16 and takes its gradient so: the products it feeds would cast it
    anyway, and the cast and its backward were two more passes over the activation each.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.ops = ops = _fused(x, weight)
        if ops is not None:
            out, r = ops.rmsnorm(x, weight, eps, _product_input_dtype(x))
            ctx.save_for_backward(x, weight, r)
            return out
        h = x.float()
        r = torch.rsqrt(torch.mean(h * h, -1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, r)
        return weight * (h * r).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, weight, r = ctx.saved_tensors
        if ctx.ops is not None:
            grad_x, grad_w = ctx.ops.rmsnorm_backward(x, weight, r, grad)  # the output's dtype
            return grad_x, grad_w, None
        n = x.float() * r
        grad_weight = torch.sum((grad.float() * n).flatten(0, -2), 0).to(weight.dtype)
        gn = grad.float() * weight.float()
        dot = torch.mean(gn * n, -1, keepdim=True)
        grad_x = gn.sub_(n.mul_(dot)).mul_(r)
        return grad_x.to(x.dtype), grad_weight, None


def rotary_tables(cfg: ModelShape) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each position's angles, one column per pair of rotated dimensions."""
    inv_freq = 1.0 / (
        cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
    )
    angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, sign: float
) -> None:
    """out = x rotated by the angles (sign 1) or back by them (sign -1), half-split layout:
    dimension i pairs with i + head_dim / 2, as in HF Llama."""
    half = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=sign)


class _Heads(torch.autograd.Function):
    """The fused q/k/v projection's output as attention heads, q and k rotated.

    Slicing q, k and v out of one tensor and rotating with `cat` costs autograd a zero-filled
    gradient per slice and several more passes; here the backward writes each head's gradient
    once, straight into the gradient of the fused projection.
    """

    @staticmethod
    def forward(
        ctx: Any, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(cos, sin)
        tables = _fused(cos, sin) is not None
        ctx.ops = ops = _fused(qkv, bf16=True) if tables else None
        if ops is not None:
            return ops.rotary_heads(qkv, cos, sin, heads, kv_heads)
        # (b, t, heads, head_dim) -> (b, heads, t, head_dim), the layout attention takes.
        all_heads = qkv.transpose(1, 2)
        q_in, k_in = all_heads[:, :heads], all_heads[:, heads : heads + kv_heads]
        q, k = q_in.new_empty(q_in.shape), k_in.new_empty(k_in.shape)
        _rotate(q_in, cos, sin, q, 1.0)
        _rotate(k_in, cos, sin, k, 1.0)
        return q, k, all_heads[:, heads + kv_heads :].contiguous()

    @staticmethod
    def backward(
        ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor
    ) -> tuple[torch.Tensor, None, None, None, None]:
        cos, sin = ctx.saved_tensors
        if ctx.ops is not None:
            grad = ctx.ops.rotary_heads_backward(grad_q, grad_k, grad_v, cos, sin)
            return grad, None, None, None, None
        b, heads, t, d = grad_q.shape
        kv_heads = grad_k.shape[1]
        grad = grad_q.new_empty(b, t, heads + 2 * kv_heads, d)
        all_heads = grad.transpose(1, 2)
        _rotate(grad_q, cos, sin, all_heads[:, :heads], -1.0)
        _rotate(grad_k, cos, sin, all_heads[:, heads : heads + kv_heads], -1.0)
        all_heads[:, heads + kv_heads :].copy_(grad_v)
        return grad, None, None, None, None


class Attention(nn.Module):
    def __init__(self, cfg: ModelShape) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def fused_weights(self) -> list[torch.Tensor]:
        """The weights `forward` joins into one product."""
        return [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """One matmul for q, k and v, and their heads split and rotated in one function: on a
        CPU three narrow matmuls and autograd's elementwise passes cost a fifth of a step. The
        weights stay three modules, so checkpoints and the HF export keep their names."""
        b, t, _ = x.shape
        heads, kv_heads = self.n_heads, self.n_kv_heads
        weight = joined(*self.fused_weights())
        qkv = F.linear(x, weight).view(b, t, heads + 2 * kv_heads, self.head_dim)
        q, k, v = cast(Heads, _Heads.apply(qkv, cos, sin, heads, kv_heads))
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = causal_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


ATTENTION_BLOCK = 64
BLOCKED_ATTENTION_MAX_LEN = 512


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention over (batch, heads, seq, head_dim).

    Training on a CPU at up to `BLOCKED_ATTENTION_MAX_LEN` positions uses `_BlockedAttention`,
    a third faster there than the fused kernel; everywhere else, and whenever no gradient is
    needed, it is `F.scaled_dot_product_attention`.
    """
    if (
        q.device.type == "cpu"
        and q.shape[-2] <= BLOCKED_ATTENTION_MAX_LEN
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        return cast(torch.Tensor, _BlockedAttention.apply(q, k, v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class _BlockedAttention(torch.autograd.Function):
    """Causal attention in blocks of query rows, each against only the keys it may see.

    On a CPU, the fused kernel's backward recomputes the attention weights and runs at a
    fraction of the matmul rate. Here each block of `ATTENTION_BLOCK` queries is two plain
    batched matmuls against the keys up to its last row, so the masked half is mostly skipped,
    and the weights are kept for the backward, which is then four more matmuls per block. The
    weights cost seq_len^2 / 2 floats per head, hence the length limit in `causal_attention`.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        shape = q.shape
        t, d = shape[-2:]
        q, k, v = (x.reshape(-1, t, d) for x in (q, k, v))
        scale = 1.0 / math.sqrt(d)
        ctx.ops = ops = _fused(q, k, v, bf16=True)
        if ops is None:
            mask = torch.full((t, t), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        bounds = [*range(0, t, ATTENTION_BLOCK), t]
        out = torch.empty_like(q)
        weights = []
        for r0, r1 in itertools.pairwise(bounds):
            if ops is not None:
                w = torch.bmm(q[:, r0:r1], k[:, :r1].mT)
                ops.causal_softmax_(w, r0, scale)
            else:
                scores = torch.baddbmm(mask[r0:r1, :r1], q[:, r0:r1], k[:, :r1].mT, alpha=scale)
                w = torch.softmax(scores, -1)
            torch.bmm(w, v[:, :r1], out=out[:, r0:r1])
            weights.append(w)
        ctx.save_for_backward(q, k, v, out, *weights)
        ctx.bounds, ctx.scale = bounds, scale
        return out.view(shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Heads:
        q, k, v, out, *weights = ctx.saved_tensors
        shape = grad.shape
        grad = grad.reshape(q.shape)
        # Row sums of grad * out are those of (grad of the weights) * weights, the softmax term.
        delta = (grad * out).sum(-1, keepdim=True)
        if ctx.ops is not None:
            delta = delta.float()
            grads = _fused_attention_backward(
                ctx.ops, q, k, v, grad, delta, weights, ctx.bounds, ctx.scale
            )
            return cast(Heads, tuple(g.view(shape) for g in grads))
        grad_q, grad_k, grad_v = (torch.zeros_like(x) for x in (q, k, v))
        for (r0, r1), w in zip(itertools.pairwise(ctx.bounds), weights, strict=True):
            grad_v[:, :r1].baddbmm_(w.mT, grad[:, r0:r1])
            grad_scores = torch.bmm(grad[:, r0:r1], v[:, :r1].mT).sub_(delta[:, r0:r1]).mul_(w)
            grad_q[:, r0:r1].baddbmm_(grad_scores, k[:, :r1], alpha=ctx.scale)
            grad_k[:, :r1].baddbmm_(grad_scores.mT, q[:, r0:r1], alpha=ctx.scale)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape)


def _fused_attention_backward(
    ops: TrainOps,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    delta: torch.Tensor,
    weights: list[torch.Tensor],
    bounds: list[int],
    scale: float,
) -> Heads:
    """`_BlockedAttention`'s backward with the softmax's in one C pass, the scale folded into
    it. The last block goes first: it spans every key, so its products initialise the
    gradients of k and v, and each block's rows of the gradient of q are written once; no
    gradient is zero-filled."""
    grad_q, grad_k, grad_v = (torch.empty_like(x) for x in (q, k, v))
    blocks = list(zip(itertools.pairwise(bounds), weights, strict=True))
    for i, ((r0, r1), w) in enumerate(reversed(blocks)):
        g = grad[:, r0:r1]
        grad_scores = torch.bmm(g, v[:, :r1].mT)
        ops.softmax_grad_(grad_scores, w, delta[:, r0:r1], scale)
        torch.bmm(grad_scores, k[:, :r1], out=grad_q[:, r0:r1])
        if i == 0:
            torch.bmm(w.mT, g, out=grad_v)
            torch.bmm(grad_scores.mT, q[:, r0:r1], out=grad_k)
        else:
            grad_v[:, :r1].baddbmm_(w.mT, g)
            grad_k[:, :r1].baddbmm_(grad_scores.mT, q[:, r0:r1])
    return grad_q, grad_k, grad_v


class MLP(nn.Module):
    """SwiGLU: a gated feed-forward that trains better per FLOP than a plain GELU MLP."""

    def __init__(self, cfg: ModelShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def fused_weights(self) -> list[torch.Tensor]:
        """The weights `forward` joins into one product."""
        return [self.gate_proj.weight, self.up_proj.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = joined(*self.fused_weights())
        return self.down_proj(cast(torch.Tensor, _SwiGLU.apply(F.linear(x, weight))))


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up from the fused gate/up projection, whose backward writes both halves of
    the gradient in place: through `chunk`, autograd concatenates them in one more copy."""

    @staticmethod
    def forward(ctx: Any, gate_up: torch.Tensor) -> torch.Tensor:
        ctx.ops = ops = _fused(gate_up, bf16=True)
        if ops is not None:
            ctx.save_for_backward(gate_up)
            return ops.swiglu(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        return act * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        if ctx.ops is not None:
            return cast(torch.Tensor, ctx.ops.swiglu_backward(ctx.saved_tensors[0], grad))
        gate_up, act = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_gate_up = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_gate_up.chunk(2, dim=-1)
        torch.mul(grad, act, out=grad_up)
        torch.mul(grad, up, out=grad_gate)
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        return grad_gate_up


class Block(nn.Module):
    def __init__(self, cfg: ModelShape) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: ModelShape) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rotary_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, std), residual outputs shrunk by depth so the stream's variance
        does not grow with the number of layers."""
        residual_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=residual_std)
            elif p.dim() == 2:
                nn.init.normal_(p, std=self.cfg.init_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, computed in fp32."""
    return cast(torch.Tensor, _CrossEntropy.apply(logits.float().flatten(0, 1), targets.flatten()))


class _CrossEntropy(torch.autograd.Function):
    """Cross-entropy whose backward is softmax minus one-hot, in place over the saved
    log-probabilities' exponent: `F.cross_entropy` first zero-fills a logits-sized gradient,
    scatters into it and then makes two more passes, over the largest activation of a small
    model's step."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ctx.ops = ops = _fused(logits)
        if ops is not None:
            loss, lse = ops.cross_entropy(logits, targets)
            ctx.save_for_backward(logits, targets, lse)
            return loss
        log_probs = torch.log_softmax(logits, -1)
        ctx.save_for_backward(log_probs, targets)
        return -log_probs.gather(1, targets[:, None]).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.ops is not None:
            logits, targets, lse = ctx.saved_tensors
            scale = float(grad) / targets.numel()
            return ctx.ops.cross_entropy_backward(logits, targets, lse, scale), None
        log_probs, targets = ctx.saved_tensors
        scale = grad / targets.numel()
        grad_logits = torch.exp(log_probs).mul_(scale)
        grad_logits.scatter_add_(1, targets[:, None], (-scale).expand(targets.numel(), 1))
        return grad_logits, None
