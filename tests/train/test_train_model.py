"""The model, its configuration and its schedule: shapes, causality, accounting."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from rainier.train.config import PRESETS, build_config
from rainier.train.model import Transformer, lm_loss
from rainier.train.optim import Schedule, adamw


@pytest.mark.parametrize(("name", "millions"), [("10m", 10), ("125m", 125), ("1b", 1000)])
def test_presets_are_the_size_their_name_says(name: str, millions: float) -> None:
    assert abs(PRESETS[name].n_params() / 1e6 - millions) / millions < 0.1


def test_parameter_and_flop_accounting_matches_the_built_model() -> None:
    for cfg in (PRESETS["tiny"], build_config("tiny", ["tie_embeddings=false", "n_kv_heads=4"])):
        model = Transformer(cfg)
        unique = {id(p): p for p in model.parameters()}
        assert sum(p.numel() for p in unique.values()) == cfg.n_params()
        matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert cfg.matmul_params() == matmul
        seq = 32
        attention = 12 * cfg.n_layers * seq * cfg.dim
        assert cfg.flops_per_token(seq) == 6 * matmul + attention


def test_overrides_are_typed_and_checked() -> None:
    cfg = build_config("tiny", ["n_layers=3", "rope_theta=500000", "tie_embeddings=false"])
    assert (cfg.n_layers, cfg.rope_theta, cfg.tie_embeddings) == (3, 500000.0, False)
    assert build_config("10m", []) == PRESETS["10m"]
    with pytest.raises(ValueError, match="key=value"):
        build_config("tiny", ["layers=3"])
    with pytest.raises(ValueError, match="not a valid int"):
        build_config("tiny", ["n_layers=three"])
    with pytest.raises(ValueError, match="divisible"):
        build_config("tiny", ["n_kv_heads=3"])
    with pytest.raises(ValueError, match="unknown preset"):
        build_config("7b", [])


def test_a_token_never_sees_the_future() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(PRESETS["tiny"], n_kv_heads=1)
    model = Transformer(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 24))
    changed = ids.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, cfg.max_seq_len + 1, dtype=torch.long))


def test_a_few_steps_fit_a_fixed_batch() -> None:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    model = Transformer(cfg)
    optimizer = adamw(model, 1e-2, 0.01, (0.9, 0.95))
    batch = torch.randint(0, cfg.vocab_size, (4, 17))
    losses = []
    for _ in range(20):
        loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert abs(losses[0] - torch.log(torch.tensor(float(cfg.vocab_size))).item()) < 0.3
    assert losses[-1] < losses[0] / 2
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.norm.weight) not in decayed and id(model.embed_tokens.weight) in decayed


def test_schedule_warms_up_then_decays_to_its_floor() -> None:
    s = Schedule(lr=1.0, warmup_steps=10, steps=110, min_ratio=0.1)
    assert s.at(0) == pytest.approx(0.1)
    assert s.at(9) == pytest.approx(1.0)
    assert s.at(60) == pytest.approx(0.55)
    assert s.at(110) == pytest.approx(0.1)
    assert s.at(500) == pytest.approx(0.1)
    lrs = [s.at(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert Schedule(lr=2.0, warmup_steps=0, steps=5).at(0) == pytest.approx(2.0)
