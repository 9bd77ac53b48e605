"""The Llama forward pass over a paged KV cache.

Written against the HF Llama tensor layout so any checkpoint in that format loads, but it does
not use `transformers`: the engine owns the cache layout, and attention reads keys and values
through each sequence's block table instead of a contiguous per-request tensor.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rainier.allocator import zeros_on_huge_pages
from rainier.kernels import load as load_kernel
from rainier.kernels.decoder import Decoder, DecoderKernel, DecoderLayer
from rainier.kernels.layer_ops import LayerOps
from rainier.kernels.linear import LinearKernel, PackedLinear
from rainier.kernels.linear_amx import AmxLinear, AmxLinearKernel, AmxSwiGLU
from rainier.kernels.paged_attention import PagedAttention
from rainier.precision import short_name
from rainier.serve.batch import BatchInput
from rainier.serve.config import HFModelConfig, ModelFormatError
from rainier.serve.onednn_linear import OneDnnLinear, onednn_linear_available
from rainier.serve.product_choice import decoder_wins
from rainier.serve.step_attention import StepAttention

log = logging.getLogger(__name__)

# A layer's products as the forward runs them: q/k/v stacked, o, gate/up stacked, down.
PROJECTIONS = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))


class Projection(Protocol):
    """A matrix product `x @ weight.T (+ bias)`, on whichever layout the weight is kept in."""

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor: ...


@dataclass(frozen=True)
class TorchLinear:
    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass
class LayerWeights:
    """One layer's weights, with q/k/v and gate/up each stacked into one matrix at load: on a
    CPU a step of a few dozen tokens is dominated by per-call overhead, not FLOPs."""

    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: Projection
    o: Projection
    gate_up: Projection
    down: Projection


@dataclass(frozen=True)
class Kernels:
    """The C kernels a CPU forward runs on; see `rainier.kernels`. They come from one
    library, `decoder.c`, which includes the others' code: one build on a machine's first start
    and one load at each start, not one for every kernel. Activations are float32 in them
    whatever the weights are; a bf16 model's cache is read and written as bf16. `linear`
    packs the matrices for the decoder's products: float32 panels for float32 weights, AMX
    tiles for bf16 ones (none where the CPU has no AMX; oneDNN multiplies bf16 there). It and
    `decoder` are kept only where they beat oneDNN's products on this model
    (`product_choice`). Every kernel spreads its rows or panels over the torch threads."""

    attention: PagedAttention
    layer: LayerOps
    linear: LinearKernel | AmxLinearKernel | None
    decoder: DecoderKernel | None

    @classmethod
    def load(cls, dtype: torch.dtype) -> Kernels | None:
        lib = load_kernel("decoder")
        if lib is None:
            return None
        packer: LinearKernel | AmxLinearKernel | None = None
        if dtype == torch.float32:
            packer = LinearKernel(lib)
        elif dtype == torch.bfloat16:
            packer = AmxLinearKernel.on(lib)
        if packer is None:
            return cls(PagedAttention(lib), LayerOps(lib), None, None)
        return cls(PagedAttention(lib), LayerOps(lib), packer, DecoderKernel(lib))

    def without_decoder(self) -> Kernels:
        return Kernels(self.attention, self.layer, None, None)


def projection_name(short: str) -> str:
    return f"self_attn.{short}_proj" if short in "qkvo" else f"mlp.{short}_proj"


def packed(projection: Projection) -> PackedLinear | AmxLinear | AmxSwiGLU:
    if not isinstance(projection, PackedLinear | AmxLinear | AmxSwiGLU):
        raise TypeError("the decoder kernel runs on packed weights only")
    return projection


def decoder_layer(layer: LayerWeights) -> DecoderLayer:
    """A layer as the decoder kernel takes it; its projections are all packed whenever the
    decoder kernel is kept, since both come from `product_choice`."""
    return DecoderLayer(
        layer.input_norm,
        layer.post_norm,
        packed(layer.qkv),
        packed(layer.o),
        packed(layer.gate_up),
        packed(layer.down),
    )


def read_safetensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded (`model.safetensors.index.json`) checkpoint."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = model_dir / "model.safetensors.index.json"
    if not index.is_file():
        raise ModelFormatError(f"{model_dir}: no model.safetensors nor its index")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_file(str(model_dir / shard)))
    return tensors


def rope_inv_freq(config: HFModelConfig) -> torch.Tensor:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type")
    if kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        original = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv_freq
        long_waves = wavelen > original / low
        short_waves = wavelen < original / high
        smooth = (original / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(long_waves, inv_freq / factor, inv_freq)
        inv_freq = torch.where(~long_waves & ~short_waves, blended, inv_freq)
    return inv_freq


class LlamaModel:
    """Weights plus a pure function of (batch, cache) -> logits; the cache is written in place."""

    def __init__(
        self,
        config: HFModelConfig,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.config = config
        self.device = device
        self.dtype = dtype

        def take(name: str) -> torch.Tensor:
            if name not in tensors:
                raise ModelFormatError(f"model.safetensors: missing tensor {name}")
            return tensors[name].to(device=device, dtype=dtype).contiguous()

        def maybe(name: str) -> torch.Tensor | None:
            return take(name) if name in tensors else None

        self.embed = take("model.embed_tokens.weight")
        if self.embed.shape != (config.vocab_size, config.hidden_size):
            raise ModelFormatError(
                f"model.embed_tokens.weight has shape {tuple(self.embed.shape)}, config.json "
                f"says ({config.vocab_size}, {config.hidden_size})"
            )
        if config.tie_word_embeddings or "lm_head.weight" not in tensors:
            lm_head = self.embed
        else:
            lm_head = take("lm_head.weight")
        self.kernels: Kernels | None = None
        if (
            device.type == "cpu"
            and dtype in (torch.float32, torch.bfloat16)
            and config.head_dim % 8 == 0
        ):
            self.kernels = Kernels.load(dtype)
        # The kernels normalise float32 activations with float32 weights.
        norm_dtype = torch.float32 if self.kernels is not None else dtype

        def norm(name: str) -> torch.Tensor:
            return take(name).to(norm_dtype)

        self.norm = norm("model.norm.weight")
        if self.kernels is not None and self.kernels.linear is not None:
            first = [
                torch.cat([take(f"model.layers.0.{projection_name(n)}.weight") for n in names])
                for names in PROJECTIONS
            ]
            if onednn_linear_available(dtype):
                wins, reason = decoder_wins(first, self.kernels.linear)
                log.info("%s: %s", reason, "packed" if wins else "oneDNN")
                if not wins:
                    self.kernels = self.kernels.without_decoder()
        packer = self.kernels.linear if self.kernels is not None else None
        onednn = device.type == "cpu" and packer is None and onednn_linear_available(dtype)

        def projection(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Projection:
            if packer is not None:
                return packer.pack(weight, bias)
            if onednn:
                return OneDnnLinear.pack(weight, bias)
            return TorchLinear(weight, bias)

        def swiglu(gate_up: torch.Tensor) -> Projection:
            """The gate/up product; on AMX with the SwiGLU fused in (it returns the act)."""
            if isinstance(packer, AmxLinearKernel):
                return packer.pack_swiglu(gate_up)
            return projection(gate_up)

        self.lm_head = projection(lm_head)
        self.layers: list[LayerWeights] = []
        for i in range(config.num_hidden_layers):
            p = f"model.layers.{i}."
            qkv = [take(p + f"self_attn.{name}_proj.weight") for name in "qkv"]
            biases = [maybe(p + f"self_attn.{name}_proj.bias") for name in "qkv"]
            qkv_bias = None
            if any(b is not None for b in biases):
                qkv_bias = torch.cat(
                    [
                        b if b is not None else w.new_zeros(w.shape[0])
                        for w, b in zip(qkv, biases, strict=True)
                    ]
                )
            gate_up = [take(p + f"mlp.{name}_proj.weight") for name in ("gate", "up")]
            self.layers.append(
                LayerWeights(
                    input_norm=norm(p + "input_layernorm.weight"),
                    post_norm=norm(p + "post_attention_layernorm.weight"),
                    qkv=projection(torch.cat(qkv), qkv_bias),
                    o=projection(
                        take(p + "self_attn.o_proj.weight"), maybe(p + "self_attn.o_proj.bias")
                    ),
                    gate_up=swiglu(torch.cat(gate_up)),
                    down=projection(take(p + "mlp.down_proj.weight")),
                )
            )
        positions = torch.arange(config.max_position_embeddings, dtype=torch.float64)
        freqs = torch.outer(positions, rope_inv_freq(config))
        angles = torch.cat([freqs, freqs], dim=-1)
        self.cos = angles.cos().to(device=device, dtype=norm_dtype)
        self.sin = angles.sin().to(device=device, dtype=norm_dtype)
        self.decoder: Decoder | None = None
        if self.kernels is not None and self.kernels.decoder is not None:
            self.decoder = Decoder(
                self.kernels.decoder,
                [decoder_layer(layer) for layer in self.layers],
                self.norm,
                packed(self.lm_head),
                self.cos,
                self.sin,
                heads=config.num_attention_heads,
                kv_heads=config.num_key_value_heads,
                eps=config.rms_norm_eps,
            )
        log.info("forward pass: %s", self.forward_path)

    @property
    def forward_path(self) -> str:
        """Which of the three forward passes runs, for the operator's log."""
        if self.decoder is not None:
            tiles = ", AMX tiles" if self.decoder.cache_dtype == torch.bfloat16 else ""
            return (
                f"one C call on packed {short_name(self.dtype)} weights{tiles} "
                f"({torch.get_num_threads()} threads)"
            )
        threads = torch.get_num_threads()
        products = "oneDNN's pre-blocked" if isinstance(self.lm_head, OneDnnLinear) else "torch's"
        if self.kernels is not None:
            return (
                f"C kernels around {products} {short_name(self.dtype)} matrix products "
                f"({threads} threads)"
            )
        return f"PyTorch operators, {products} {short_name(self.dtype)} matrix products ({threads} threads)"

    @classmethod
    def load(
        cls, model_dir: Path, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> LlamaModel:
        return cls(HFModelConfig.from_dir(model_dir), read_safetensors(model_dir), device, dtype)

    def new_kv_cache(self, num_blocks: int, block_size: int) -> torch.Tensor:
        """[layers, 2 (k, v), slots, kv_heads, head_dim], one pool shared by all sequences."""
        c = self.config
        shape = (c.num_hidden_layers, 2, num_blocks * block_size, c.num_key_value_heads, c.head_dim)
        if self.device.type == "cpu":
            return zeros_on_huge_pages(shape, self.dtype)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def kv_bytes_per_token(self) -> int:
        c = self.config
        element = torch.empty((), dtype=self.dtype).element_size()
        return c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * element

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Normalised in fp32 whatever the weights' dtype: the mean of squares is where half
        precision loses the most."""
        wide = x.float()
        variance = wide.pow(2).mean(-1, keepdim=True)
        normed = (wide * torch.rsqrt(variance + self.config.rms_norm_eps)).to(x.dtype)
        return (weight * normed).to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, batch: BatchInput, kv_cache: torch.Tensor) -> torch.Tensor:
        """Logits [len(batch.logits_index), vocab] for the tokens that asked for them."""
        if self.kernels is not None:
            return self._forward_with_kernels(batch, kv_cache, self.kernels)
        c = self.config
        n = batch.num_tokens
        heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
        cos = self.cos[batch.positions][:, None, :].to(self.dtype)
        sin = self.sin[batch.positions][:, None, :].to(self.dtype)
        hidden = self.embed[batch.token_ids]
        groups = heads // kv_heads
        prefill_masks = [p.mask.repeat(groups, 1) for p in batch.prefills]
        for layer_index, layer in enumerate(self.layers):
            x = self._rms_norm(hidden, layer.input_norm)
            qkv = layer.qkv(x).view(n, -1, c.head_dim)
            qk = self._rope(qkv[:, : heads + kv_heads], cos, sin)
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :]
            cache = kv_cache[layer_index]
            cache[0].index_copy_(0, batch.slot_mapping, k)
            cache[1].index_copy_(0, batch.slot_mapping, v)
            attn = self._attention(q, cache, batch, prefill_masks)
            hidden = hidden + layer.o(attn.reshape(n, -1))
            x = self._rms_norm(hidden, layer.post_norm)
            gate, up = layer.gate_up(x).chunk(2, dim=-1)
            hidden = hidden + layer.down(F.silu(gate) * up)
        last = self._rms_norm(hidden[batch.logits_index], self.norm)
        return self.lm_head(last).float()

    def _forward_with_kernels(
        self, batch: BatchInput, kv_cache: torch.Tensor, kernels: Kernels
    ) -> torch.Tensor:
        """The same layers with each element-wise chain one kernel call and attention read in
        place from the cache; the residual add is folded into the next RMSNorm."""
        c = self.config
        n, heads, eps = batch.num_tokens, c.num_attention_heads, c.rms_norm_eps
        self._check_indexes(batch, kv_cache)
        if self.decoder is not None:
            return self.decoder(
                self.embed[batch.token_ids].float(), kv_cache, batch.positions, batch.slot_mapping,
                batch.block_tables, batch.block_size, batch.token_seq, batch.context_lens,
                batch.logits_index,
            )  # fmt: skip
        ops = kernels.layer
        scale = 1.0 / math.sqrt(c.head_dim)
        # Activations go into and out of oneDNN's products in the weights' dtype (the kernels
        # around them read and write it), into the packed ones in float32 (they round to the
        # weights' dtype themselves); the residual stream and attention stay float32.
        dtype = torch.float32 if kernels.linear is not None else self.dtype
        attend = StepAttention.plan(batch)
        hidden = self.embed[batch.token_ids].float()
        x = ops.rms_norm(hidden, self.layers[0].input_norm, eps, dtype)
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(x).float().view(n, -1, c.head_dim)
            k_cache, v_cache = kv_cache[i]
            ops.rope_store(
                qkv, heads, self.cos, self.sin, batch.positions, batch.slot_mapping, k_cache,
                v_cache,
            )  # fmt: skip
            attn = attend(kernels.attention, qkv, heads, k_cache, v_cache, batch, scale)
            attn_out = layer.o(attn.view(n, -1).to(dtype))
            x = ops.add_rms_norm(hidden, attn_out, layer.post_norm, eps)
            gate_up = layer.gate_up
            act = gate_up(x) if isinstance(gate_up, AmxSwiGLU) else ops.silu_mul(gate_up(x))
            down = layer.down(act)
            if i + 1 < len(self.layers):
                x = ops.add_rms_norm(hidden, down, self.layers[i + 1].input_norm, eps)
            else:
                ops.add_(hidden, down)
        last = ops.rms_norm(hidden[batch.logits_index], self.norm, eps, dtype)
        return self.lm_head(last).float()

    def _check_indexes(self, batch: BatchInput, kv_cache: torch.Tensor) -> None:
        """The kernels follow these indexes with raw pointers: one out of range would read or
        write outside the cache rather than raise. `build_batch` has looked every new token's
        slot up in its block table, so the tables cover every context; what is left is that
        each block and position exists."""
        low, high = torch.aminmax(batch.block_tables)
        if (
            int(low) < 0
            or int(high) >= kv_cache.shape[2] // batch.block_size
            or batch.max_position >= self.cos.shape[0]
        ):
            raise IndexError("a batch index points outside the KV cache or the rotary tables")

    def _attention(
        self,
        q: torch.Tensor,
        cache: torch.Tensor,
        batch: BatchInput,
        prefill_masks: list[torch.Tensor],
    ) -> torch.Tensor:
        """Grouped-query attention without copying keys per query head: the query heads sharing
        a KV head are stacked along the query axis, so each KV head is read once for its whole
        group. Keys and values are gathered together with `index_select` over whole blocks,
        which is several times cheaper than advanced indexing or slot-by-slot gathers on a CPU.
        `prefill_masks` are the prefills' masks repeated for the stacked query heads."""
        c = self.config
        block_size = batch.block_size
        kv_heads, dim = c.num_key_value_heads, c.head_dim
        groups = c.num_attention_heads // kv_heads
        scale = 1.0 / math.sqrt(dim)
        out = torch.empty_like(q)
        for d in batch.decodes:
            rows = d.block_ids.shape[0]
            width = d.mask.shape[-1]
            blocks = cache.view(2, -1, block_size * kv_heads * dim)
            kv = blocks.index_select(1, d.block_ids.view(-1))
            kv = kv.view(2, rows, width, kv_heads, dim).transpose(2, 3)
            end = d.token_start + rows
            query = q[d.token_start : end].view(rows, kv_heads, groups, dim)
            attended = F.scaled_dot_product_attention(
                query, kv[0], kv[1], attn_mask=d.mask, scale=scale
            )
            out[d.token_start : end] = attended.reshape(rows, c.num_attention_heads, dim)
        for p, mask in zip(batch.prefills, prefill_masks, strict=True):
            n, width = p.num_tokens, p.mask.shape[-1]
            blocks = cache.view(2, -1, block_size * kv_heads * dim)
            kv = blocks.index_select(1, p.block_ids).view(2, -1, kv_heads, dim)[:, :width]
            kv = kv.transpose(1, 2)
            query = q[p.token_start : p.token_start + n].view(n, kv_heads, groups, dim)
            query = query.permute(1, 2, 0, 3).reshape(kv_heads, groups * n, dim)
            attended = F.scaled_dot_product_attention(
                query, kv[0], kv[1], attn_mask=mask, scale=scale
            )
            attended = attended.view(kv_heads, groups, n, dim).permute(2, 0, 1, 3)
            out[p.token_start : p.token_start + n] = attended.reshape(n, c.num_attention_heads, dim)
        return out
