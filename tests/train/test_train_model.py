"""The model, its configuration and its schedule: shapes, causality, accounting."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from rainier.train import model as model_mod
from rainier.train.config import PRESETS, build_config
from rainier.train.model import Transformer, causal_attention, lm_loss
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


def reference_loss(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The same model in plain autograd ops, the way HF Llama writes it: the model's own
    backward passes are written by hand and must agree with this one's."""
    cfg = model.cfg
    t, half = ids.shape[1] - 1, cfg.head_dim // 2
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
    angles = torch.outer(torch.arange(t).float(), inv_freq).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps))

    def rotate(x: torch.Tensor) -> torch.Tensor:
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin

    x = model.embed_tokens(ids[:, :-1])
    b = x.shape[0]
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        h = norm(x, layer.input_layernorm.weight)
        q, k, v = (
            proj(h).view(b, t, -1, cfg.head_dim).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        repeat = cfg.n_heads // cfg.n_kv_heads
        k, v = k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1)
        y = F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
        x = x + attn.o_proj(y.transpose(1, 2).reshape(b, t, -1))
        h = norm(x, layer.post_attention_layernorm.weight)
        x = x + mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
    logits = model.lm_head(norm(x, model.norm.weight))
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


@pytest.mark.parametrize("overrides", [[], ["n_kv_heads=4", "tie_embeddings=false"]])
def test_hand_written_backward_passes_match_autograd(overrides: list[str]) -> None:
    torch.manual_seed(0)
    model = Transformer(build_config("tiny", overrides))
    with torch.no_grad():  # norm gains away from 1, so that their gradients are tested too
        for p in model.parameters():
            if p.dim() == 1:
                p += 0.1 * torch.randn_like(p)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 151))  # three blocks of attention rows
    loss = lm_loss(model(ids[:, :-1]), ids[:, 1:])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected_loss = reference_loss(model, ids)
    expected = torch.autograd.grad(expected_loss, list(model.parameters()))
    assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-5)
    for (name, _), got, want in zip(model.named_parameters(), grads, expected, strict=True):
        assert (got - want).abs().max() <= 1e-4 * want.abs().max(), name


@pytest.mark.parametrize("seq", [1, 63, 64, 65, 200])
def test_blocked_attention_matches_the_fused_kernel(seq: int) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, seq, 16, dtype=torch.float64, requires_grad=True) for _ in "qkv")
    out = causal_attention(q, k, v)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    assert (out - expected).abs().max() < 1e-12
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() < 1e-12


@pytest.mark.parametrize("seq", [1, 63, 65, 200])
def test_bf16_blocked_attention_on_the_kernels_is_as_exact_as_on_pytorch(
    seq: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 blocks with the C softmax and its backward land no further from the float64
    result than the same blocks on PyTorch's bf16 operators (which the kernels replace)."""
    torch.manual_seed(0)
    q, k, v, grad = (torch.randn(2, 3, seq, 16, dtype=torch.float64) for _ in range(4))

    def run(dtype: torch.dtype) -> list[torch.Tensor]:
        inputs = [x.to(dtype).requires_grad_() for x in (q, k, v)]
        out = causal_attention(*inputs)
        grads = torch.autograd.grad(out, inputs, grad.to(dtype))
        return [t.double() for t in (out, *grads)]

    exact, ours = run(torch.float64), run(torch.bfloat16)
    monkeypatch.setattr(model_mod, "_kernels", lambda: None)
    theirs = run(torch.bfloat16)
    for name, got, reference, want in zip(
        ("out", "dq", "dk", "dv"), ours, theirs, exact, strict=True
    ):
        error, reference_error = (got - want).abs().max(), (reference - want).abs().max()
        assert error <= 1.25 * reference_error + 1e-3, (
            f"{name}: {error:.2e} vs {reference_error:.2e}"
        )


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
