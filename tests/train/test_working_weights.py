"""bf16 working copies: the same steps as autocast over float32 weights, without the casts."""

from __future__ import annotations

import pytest
import torch

from rainier.kernels.adamw import AdamWKernel
from rainier.precision import mixed_precision
from rainier.train.config import build_config
from rainier.train.model import Transformer, lm_loss
from rainier.train.optim import adamw, clip_gradients
from rainier.train.working_weights import WorkingWeights

CPU = torch.device("cpu")
SHAPE = ["dim=64", "n_layers=2", "n_heads=4", "n_kv_heads=2", "ffn_dim=160",
         "vocab_size=300", "max_seq_len=32"]  # fmt: skip

pytestmark = pytest.mark.skipif(AdamWKernel.load() is None, reason="no C compiler here")


def model_and_optimizer() -> tuple[Transformer, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = Transformer(build_config("tiny", SHAPE))
    return model, adamw(model, 3e-3, 0.1, (0.9, 0.95))


def working_for(
    model: Transformer, opt: torch.optim.AdamW, **changes: object
) -> WorkingWeights | None:
    kwargs: dict[str, object] = {"single_process": True, "compiled": False, "grad_accum": 1}
    kwargs |= changes
    return WorkingWeights.for_run(model, opt, torch.bfloat16, CPU, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_norm", [1e3, 0.05])
def test_steps_match_autocast_and_adamw(max_norm: float) -> None:
    """Five steps each way from the same weights and batches. The first step's gradients are
    bitwise autocast's (the copies are its casts and bf16 gradients widen exactly), so after it
    masters and moments agree to float32 rounding of the update; later steps' losses and norms
    stay within bf16's rounding of those ulps. A small `max_norm` clips every step."""
    torch.manual_seed(1)
    batches = [torch.randint(0, 300, (4, 17)) for _ in range(5)]
    autocast = mixed_precision(CPU, torch.bfloat16)

    plain, plain_opt = model_and_optimizer()
    ours, our_opt = model_and_optimizer()
    working = working_for(ours, our_opt)
    assert working is not None
    assert "embed_tokens.weight" not in working.copies
    assert "layers.0.mlp.gate_proj.weight" in working.copies
    gate, up = (working.copies[f"layers.0.mlp.{n}_proj.weight"] for n in ("gate", "up"))
    assert up.data_ptr() == gate.data_ptr() + gate.numel() * 2, "joined without a copy"
    for step, batch in enumerate(batches, 1):
        with autocast:
            plain_loss = lm_loss(plain(batch[:, :-1]), batch[:, 1:])
        plain_loss.backward()
        plain_norm = clip_gradients(plain, max_norm)
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

        with autocast:
            our_loss = lm_loss(working(batch[:, :-1]), batch[:, 1:])
        our_loss.backward()
        our_norm = working.clip_and_step(max_norm)
        our_opt.zero_grad(set_to_none=True)

        torch.testing.assert_close(our_loss, plain_loss, rtol=2e-3, atol=0)
        torch.testing.assert_close(our_norm, plain_norm.float(), rtol=2e-3, atol=0)
        if step == 1:
            assert torch.equal(our_loss, plain_loss) and float(our_norm) == pytest.approx(
                float(plain_norm), rel=1e-6
            )
            for p, q in zip(ours.parameters(), plain.parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
                for key in ("exp_avg", "exp_avg_sq"):
                    theirs = plain_opt.state[q][key]
                    torch.testing.assert_close(our_opt.state[p][key], theirs, rtol=1e-5, atol=1e-9)
    for p in ours.parameters():
        assert float(our_opt.state[p]["step"]) == 5
    for name, copy in working.copies.items():
        assert torch.equal(copy, working.masters[name].detach().bfloat16()), name
        assert copy.grad is None
    saved = our_opt.state_dict()["state"][2]
    assert set(saved) == {"step", "exp_avg", "exp_avg_sq"}, (
        "AdamW's own state, as checkpoints save it"
    )


def test_not_used_where_it_would_compute_something_else() -> None:
    model, opt = model_and_optimizer()
    assert working_for(model, opt) is not None
    assert working_for(model, opt, single_process=False) is None
    assert working_for(model, opt, compiled=True) is None
    assert working_for(model, opt, grad_accum=2) is None
    assert WorkingWeights.for_run(model, opt, torch.float32, CPU, single_process=True,
                                  compiled=False, grad_accum=1) is None  # fmt: skip
