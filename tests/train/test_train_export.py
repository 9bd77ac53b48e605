"""The exported folder is an ordinary Hugging Face Llama model, and the control plane hears about
the run: metrics while it trains, the model when it is exported."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rainier.train.config import PRESETS, ModelShape, build_config
from rainier.train.export import export
from rainier.train.model import Transformer
from rainier.train.tokenizer import END_OF_TEXT

from .trainkit import Reference, final_state

transformers = pytest.importorskip("transformers")

TEXT = "def f3(x):\n    return x * 3 + 3\nThe model learns tokens from text."


def test_transformers_loads_the_export_with_the_same_logits(reference: Reference) -> None:
    folder = reference.export_dir
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == TEXT
    assert tokenizer.eos_token == END_OF_TEXT

    hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
    state = final_state(reference.checkpoint_dir)
    ours = Transformer(ModelShape(**state["config"]))
    ours.load_state_dict(state["model"])
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - ours.eval()(ids)).abs().max().item()
    assert diff < 1e-4


def test_grouped_query_attention_and_an_untied_head_export_too(
    reference: Reference, tmp_path: Path
) -> None:
    """Exported over an earlier export of another shape, which it replaces whole."""
    cfg = build_config("tiny", ["n_heads=8", "n_kv_heads=2", "tie_embeddings=false", "n_layers=3"])
    tokenizer = reference.export_dir / "tokenizer.json"
    earlier = Transformer(PRESETS["tiny"]).state_dict()
    export(earlier, PRESETS["tiny"], tokenizer, 0, tmp_path / "m")
    torch.manual_seed(1)
    ours = Transformer(cfg).eval()
    folder = export(ours.state_dict(), cfg, tokenizer, 0, tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.randint(0, cfg.vocab_size, (2, 50))
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - ours(ids)).abs().max().item()
    assert diff < 1e-4
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))


def test_metrics_are_posted_with_the_token_and_the_model_registered(reference: Reference) -> None:
    posts = reference.control.posts
    metrics = [p for p in posts if p[0] == "/api/v1/jobs/job-123/metrics"]
    assert {auth for _, auth, _ in posts} == {"Bearer secret-token"}
    assert [body["step"] for _, _, body in metrics] == list(range(1, 17))
    for _, _, body in metrics:
        assert set(body) == {"step", "metrics"}
        values = body["metrics"]
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(values)
        assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
        assert values["tokens_per_s"] > 0 and values["mfu"] > 0
    assert "val_loss" in metrics[-1][2]["metrics"]
    assert metrics[-1][2]["metrics"]["loss"] < metrics[0][2]["metrics"]["loss"]
    registrations = [body for path, _, body in posts if path == "/api/v1/models"]
    assert registrations == [
        {"name": "reference", "path": str(reference.export_dir.resolve()), "job_id": "job-123"}
    ]
    assert reference.run.events("exported")[0]["registered"] is True
    assert reference.run.events("metrics_not_posted") == []


def test_the_metrics_file_holds_what_stdout_said(reference: Reference) -> None:
    lines = (reference.checkpoint_dir / "metrics.jsonl").read_text().splitlines()
    from_file = [json.loads(line) for line in lines]
    assert from_file == reference.run.records
    (start,) = reference.run.events("start")
    assert start["peak_source"] == "measured" and start["peak_tflops"] > 0
    assert start["flops_per_token"] == build_config("tiny", []).flops_per_token(32)
