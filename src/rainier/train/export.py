"""A trained model as a Hugging Face Llama folder, loadable by `transformers` and by serve/.

Written into a temporary folder and renamed, like checkpoints, so a registered path is never a
half-written model; with a storage URL the folder is then published there (files first, the
manifest last), and the URL is what is registered.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rainier.storage.access import StorageAccess
from rainier.storage.publish import publish
from rainier.train.config import ModelConfig
from rainier.train.tokenizer import END_OF_TEXT


def hf_config(cfg: ModelConfig, eos_id: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our names are HF's without the `model.` prefix; a tied head is stored once."""
    out = {}
    for name, tensor in state.items():
        if name.startswith("lm_head."):
            if cfg.tie_embeddings:
                continue
            out[name] = tensor
        else:
            out[f"model.{name}"] = tensor
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


def export(
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tokenizer_path: Path,
    eos_id: int,
    out_dir: Path,
) -> Path:
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(hf_state_dict(state, cfg), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
    _write_json(tmp / "config.json", hf_config(cfg, eos_id))
    _write_json(
        tmp / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": END_OF_TEXT,
            "eos_token": END_OF_TEXT,
            "unk_token": None,
            "model_max_length": cfg.max_seq_len,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
        },
    )
    _write_json(
        tmp / "special_tokens_map.json", {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT}
    )
    _write_json(
        tmp / "generation_config.json",
        {"bos_token_id": eos_id, "eos_token_id": eos_id, "max_length": cfg.max_seq_len},
    )
    old = out_dir.parent / f".old-{out_dir.name}-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def publish_model(folder: Path, url: str, access: StorageAccess | None = None) -> str:
    """Uploads an exported model folder to `url`; a deployment downloads it from there."""
    publish(folder, url, access if access is not None else StorageAccess.from_env())
    return url


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
