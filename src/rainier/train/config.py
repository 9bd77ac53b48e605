"""Model shapes: named presets, `key=value` overrides, and the FLOPs a token costs.

The config is plain data so it can be stored in checkpoints and exported as an HF `config.json`
without carrying any torch state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 192
    vocab_size: int = 512
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for rotary positions")
        if self.vocab_size < 257:
            raise ValueError("vocab_size must be >= 257 (256 bytes + end-of-text)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def matmul_params(self) -> int:
        """Weights touched by a matmul per token: everything but the embedding lookup."""
        kv_dim = self.n_kv_heads * self.head_dim
        attn = self.dim * (2 * self.dim + 2 * kv_dim)
        ffn = 3 * self.dim * self.ffn_dim
        return self.n_layers * (attn + ffn) + self.dim * self.vocab_size

    def n_params(self) -> int:
        norms = (2 * self.n_layers + 1) * self.dim
        embedding = self.vocab_size * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.matmul_params() - self.dim * self.vocab_size + embedding + head + norms

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token, the PaLM-paper accounting.

        6 per matmul weight, plus 12 * layers * seq_len * dim for the attention scores and the
        weighted sum of values (counted in full even though causal masking skips half).
        """
        return 6.0 * self.matmul_params() + 12.0 * self.n_layers * seq_len * self.dim


PRESETS: dict[str, ModelShape] = {
    "tiny": ModelShape(),
    "10m": ModelShape(
        dim=320, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=864, vocab_size=4096,
        max_seq_len=1024,
    ),
    "125m": ModelShape(
        dim=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_dim=2048, vocab_size=32768,
        max_seq_len=2048, tie_embeddings=False,
    ),
    "1b": ModelShape(
        dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192, vocab_size=32768,
        max_seq_len=4096, rope_theta=500000.0,
    ),
}  # fmt: skip


def build_config(preset: str, overrides: list[str]) -> ModelShape:
    """A preset with `key=value` overrides applied, values parsed as the field's type."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    fields = {f.name: f for f in dataclasses.fields(ModelShape)}
    changes: dict[str, object] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"{item!r}: expected key=value with key one of {', '.join(fields)}")
        kind = type(getattr(PRESETS[preset], key))
        try:
            changes[key] = _parse(raw.strip(), kind)
        except ValueError:
            raise ValueError(f"{item!r}: {raw!r} is not a valid {kind.__name__}") from None
    return dataclasses.replace(PRESETS[preset], **changes)  # type: ignore[arg-type]


def _parse(raw: str, kind: type) -> object:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    return kind(raw)
