"""Typed entry to `decoder.c`: a whole forward pass over a paged KV cache, as one call."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from rainier.kernels import I64, PTR, bind, require_float32_cpu
from rainier.kernels.linear import PackedLinear
from rainier.kernels.linear_amx import AmxLinear, AmxSwiGLU

# A matrix packed for one of the decoder's two products: float32 panels, or bf16 AMX tiles
# (the gate/up one with the SwiGLU as its epilogue).
PackedProduct = PackedLinear | AmxLinear | AmxSwiGLU


class Shape(ctypes.Structure):
    """`struct shape` of decoder.c."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in (
            "layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab"
        )),
        ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
    ]  # fmt: skip


@dataclass(frozen=True)
class DecoderLayer:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: PackedProduct
    o: PackedProduct
    gate_up: PackedProduct
    down: PackedProduct


class DecoderKernel:
    """`decoder_forward` (float32 weights and cache) and `decoder_forward_bf16` (bf16 ones,
    on AMX) of a library built from decoder.c, which also holds the kernels they compose;
    `Kernels.load` in the serving model builds it once for all of them."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        args = (
            ctypes.POINTER(Shape), ctypes.POINTER(ctypes.c_void_p), PTR, PTR, PTR, PTR,
            PTR, I64, I64, PTR, I64, PTR, PTR, PTR, I64, PTR, PTR, PTR, I64, PTR,
        )  # fmt: skip
        self.fn = bind(lib, "decoder_forward", ctypes.c_int, *args)
        self.fn_bf16 = bind(lib, "decoder_forward_bf16", ctypes.c_int, *args)


class Decoder:
    """A model's weights bound once, as the pointer table decoder.c reads; a call is a step.

    Every weight is checked here, once: packed for one product, norms float32 and
    contiguous, and of the width the shape says, since the C code follows raw pointers and
    would read past a short one rather than fail. bf16 matrices (`AmxLinear`) take a bf16
    cache, float32 ones a float32 cache.
    """

    def __init__(
        self,
        kernel: DecoderKernel,
        layers: list[DecoderLayer],
        norm: torch.Tensor,
        lm_head: PackedProduct,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *,
        heads: int,
        kv_heads: int,
        eps: float,
    ) -> None:
        first = layers[0]
        hidden, head_dim = first.o.out_features, cos.shape[1]
        ffn = first.down.in_features
        self.shape = Shape(
            len(layers), hidden, heads, kv_heads, head_dim, ffn, lm_head.out_features, eps,
            head_dim**-0.5,
        )  # fmt: skip
        qkv_width = (heads + 2 * kv_heads) * head_dim
        for layer in layers:
            for norm_weight in (layer.input_norm, layer.post_norm):
                _check_vector(norm_weight, hidden)
            for proj, rows, cols in (
                (layer.qkv, qkv_width, hidden),
                (layer.o, hidden, heads * head_dim),
                (layer.gate_up, 2 * ffn, hidden),
                (layer.down, hidden, ffn),
            ):
                if (proj.out_features, proj.in_features) != (rows, cols):
                    raise ValueError("decoder: a projection's shape disagrees with the model's")
        _check_vector(norm, hidden)
        kind = type(lm_head)
        gate_up_kind = AmxSwiGLU if kind is AmxLinear else kind
        if any(type(p) is not kind for layer in layers for p in (layer.qkv, layer.o, layer.down)) \
                or any(type(layer.gate_up) is not gate_up_kind for layer in layers):  # fmt: skip
            raise ValueError("decoder: every matrix is packed for the same product")
        self.cache_dtype = torch.bfloat16 if kind is AmxLinear else torch.float32
        if lm_head.in_features != hidden or cos.shape != sin.shape:
            raise ValueError("decoder: the output head or rotary tables have the wrong width")
        require_float32_cpu(cos, sin, contiguous=True)
        self._keep = (layers, norm, lm_head, cos, sin)
        table: list[int | None] = []
        for layer in layers:
            table += [
                layer.input_norm.data_ptr(),
                layer.post_norm.data_ptr(),
                layer.qkv.packed.data_ptr(),
                _bias(layer.qkv),
                layer.o.packed.data_ptr(),
                _bias(layer.o),
                layer.gate_up.packed.data_ptr(),
                layer.down.packed.data_ptr(),
            ]
        self._weights = (ctypes.c_void_p * len(table))(*table)
        self._fixed = (
            ctypes.byref(self.shape), self._weights, norm.data_ptr(), lm_head.packed.data_ptr(),
            cos.data_ptr(), sin.data_ptr(),
        )  # fmt: skip
        self._fn = kernel.fn_bf16 if kind is AmxLinear else kernel.fn

    def __call__(
        self,
        hidden: torch.Tensor,
        kv_cache: torch.Tensor,
        positions: torch.Tensor,
        slot_mapping: torch.Tensor,
        block_tables: torch.Tensor,
        block_size: int,
        token_seq: torch.Tensor,
        context_lens: torch.Tensor,
        logits_index: torch.Tensor,
    ) -> torch.Tensor:
        """`hidden` [tokens, hidden], the embeddings, becomes the residual stream; the cache is
        [layers, 2, slots, kv_heads, head_dim]. The indexes are the batch's, int64, and must
        point inside the cache, its block tables and the rotary tables: the caller checks
        that once a step. Returns the logits of the rows `logits_index` names."""
        s = self.shape
        tokens = hidden.shape[0]
        require_float32_cpu(hidden, contiguous=True)
        if (kv_cache.dtype != self.cache_dtype or kv_cache.device.type != "cpu"
                or not kv_cache.is_contiguous()):  # fmt: skip
            raise ValueError(f"decoder: the KV cache is a contiguous {self.cache_dtype} tensor")
        if hidden.shape != (tokens, s.hidden):
            raise ValueError(f"decoder: hidden rows of {s.hidden}, not {tuple(hidden.shape)}")
        layers, pair, slots, kv_heads, head_dim = kv_cache.shape
        if (layers, pair, kv_heads, head_dim) != (s.layers, 2, s.kv_heads, s.head_dim):
            raise ValueError("decoder: the KV cache is not [layers, 2, slots, kv_heads, head_dim]")
        for index in (positions, slot_mapping, token_seq, context_lens):
            if index.dtype != torch.int64 or not index.is_contiguous() or len(index) != tokens:
                raise ValueError("decoder: positions, slots and sequences are int64, one per token")
        for index in (block_tables, logits_index):
            if index.dtype != torch.int64 or not index.is_contiguous():
                raise ValueError("decoder: block tables and logits rows are contiguous int64")
        logits = torch.empty((len(logits_index), s.vocab), dtype=torch.float32)
        status = self._fn(
            *self._fixed, kv_cache.data_ptr(), slots, block_size, hidden.data_ptr(), tokens,
            positions.data_ptr(), slot_mapping.data_ptr(), block_tables.data_ptr(),
            block_tables.shape[1], token_seq.data_ptr(), context_lens.data_ptr(),
            logits_index.data_ptr(), len(logits_index), logits.data_ptr(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("decoder: no memory for the step's buffers")
        return logits


def _check_vector(t: torch.Tensor, width: int) -> None:
    require_float32_cpu(t, contiguous=True)
    if t.shape != (width,):
        raise ValueError(f"decoder: a norm weight of {width} values, not {tuple(t.shape)}")


def _bias(proj: PackedProduct) -> int | None:
    return proj.bias.data_ptr() if proj.bias is not None else None
