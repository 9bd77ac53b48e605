"""What a model directory says about its architecture, and how the engine is sized.

The model directory is the contract with whoever produced the weights (our training runtime or
any other tool writing the HF Llama layout), so only `config.json` fields are read here and
unknown architectures are refused up front rather than producing garbage tokens later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
DTYPES = ("float32", "bfloat16", "float16")


class ModelFormatError(ValueError):
    """The model directory cannot be served as it is; the message says which file and field."""


@dataclass(frozen=True)
class HFModelConfig:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    head_dim: int = 0
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelFormatError(
                "config.json: num_attention_heads must be a multiple of num_key_value_heads"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HFModelConfig:
        archs = raw.get("architectures") or ["LlamaForCausalLM"]
        if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
            raise ModelFormatError(
                f"config.json: architectures {archs} not supported; "
                f"expected one of {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        required = (
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_hidden_layers",
            "vocab_size",
        )
        missing = [k for k in required if k not in raw]
        if missing:
            raise ModelFormatError(f"config.json: missing fields {', '.join(missing)}")
        heads = int(raw["num_attention_heads"])
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        theta = float(raw.get("rope_theta") or rope.pop("rope_theta", None) or 10000.0)
        rope.pop("rope_theta", None)
        rope_type = rope.get("rope_type") or rope.get("type") or "default"
        if rope_type not in ("default", "linear", "llama3"):
            raise ModelFormatError(f"config.json: rope type {rope_type!r} not supported")
        return cls(
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            vocab_size=int(raw["vocab_size"]),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=None if rope_type == "default" else {**rope, "rope_type": rope_type},
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            head_dim=int(raw.get("head_dim") or 0),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=_id_tuple(raw.get("eos_token_id")),
        )

    @classmethod
    def from_dir(cls, model_dir: Path) -> HFModelConfig:
        path = model_dir / "config.json"
        if not path.is_file():
            raise ModelFormatError(f"{path}: not found")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw)


def _id_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class GenerationDefaults:
    """`generation_config.json`: defaults a request falls back to when it leaves a field out."""

    eos_token_ids: tuple[int, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None

    @classmethod
    def from_dir(cls, model_dir: Path) -> GenerationDefaults:
        path = model_dir / "generation_config.json"
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        if not raw.get("do_sample", True):
            return cls(eos_token_ids=_id_tuple(raw.get("eos_token_id")))
        return cls(
            eos_token_ids=_id_tuple(raw.get("eos_token_id")),
            temperature=raw.get("temperature"),
            top_p=raw.get("top_p"),
            top_k=raw.get("top_k"),
        )


@dataclass(frozen=True)
class EngineConfig:
    """How big the engine may get: KV pool, per-step token budget, batch width."""

    kv_memory_mb: float = 256.0
    block_size: int = 16
    max_batch_tokens: int = 2048
    max_num_seqs: int = 128
    enable_prefix_caching: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.max_batch_tokens <= 0 or self.max_num_seqs <= 0:
            raise ValueError("block_size, max_batch_tokens and max_num_seqs must be positive")
        if self.kv_memory_mb <= 0:
            raise ValueError("kv_memory_mb must be positive")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len must be at least 2")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
