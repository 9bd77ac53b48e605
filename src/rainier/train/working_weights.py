"""bf16 working copies of a model's weight matrices, for bf16 training in one CPU process.

Under autocast every weight matrix is cast to bf16 on each forward, and each bf16 weight
gradient is cast back to float32 on the backward. On a CPU those casts are full passes over
the weights, about an eighth of a 100M-parameter model's step on a core with matrix units.
Here the forward runs on bf16 copies kept from step to step, the gradients stay in bf16, and
the optimizer step (`kernels/adamw.c`) reads them where they are, updates the float32 master
weights and moments, and writes the next copies.

What is computed is what autocast computes: its cast of a weight is the copy's value (both
round to nearest), its bf16 weight gradient widens to float32 exactly, and the update is
AdamW's. The model's parameters stay the float32 masters, so checkpoints, validation and
export see what they always did, and the optimizer's state is `torch.optim.AdamW`'s, so a run
resumes with or without these copies.

Used only where all of this holds; elsewhere the step is autocast's:
- bf16 on a CPU, where the casts are not nearly free as they are on a GPU;
- one process: DDP reduces the gradients of the module's own parameters;
- no `torch.compile`, which traces the module with its own parameters;
- one micro-batch a step: bf16 gradients summed over micro-batches would round every sum.
The token embedding keeps float32: its output is the residual stream, which stays float32.
The copies of the weights a module joins into one product (`fused_weights`: q/k/v, gate/up)
lie side by side in one storage, so the join on each forward is that memory, not a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from rainier.kernels.adamw import AdamWKernel
from rainier.train.joined import side_by_side


@dataclass
class WorkingWeights:
    """The copies by parameter name, their float32 masters, and the kernel that steps them."""

    model: nn.Module
    optimizer: torch.optim.AdamW
    kernel: AdamWKernel
    copies: dict[str, torch.Tensor]
    masters: dict[str, nn.Parameter]
    # Each copy's optimizer group (lr, betas, decay), found once: the groups' dicts are the
    # optimizer's own, so the schedule's new lr is read through them every step.
    groups: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        self.groups = {name: group_of[id(p)] for name, p in self.masters.items()}

    @classmethod
    def for_run(
        cls,
        model: nn.Module,
        optimizer: torch.optim.AdamW,
        dtype: torch.dtype,
        device: torch.device,
        *,
        single_process: bool,
        compiled: bool,
        grad_accum: int,
    ) -> WorkingWeights | None:
        """Copies of the current masters where the conditions above hold, else None. Made
        after any checkpoint is loaded: the copies start from the masters."""
        if dtype != torch.bfloat16 or device.type != "cpu" or not single_process:
            return None
        if compiled or grad_accum != 1:
            return None
        if any(g.get("amsgrad") or g.get("maximize") for g in optimizer.param_groups):
            return None
        kernel = AdamWKernel.load()
        if kernel is None:
            return None
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        masters = {
            name: p
            for name, p in model.named_parameters()
            if p.requires_grad and p.dim() >= 2 and id(p) not in embeddings
        }
        name_of = {id(p): name for name, p in masters.items()}
        made: dict[str, torch.Tensor] = {}
        for module in model.modules():
            fused = getattr(module, "fused_weights", None)
            group = fused() if callable(fused) else []
            if group and all(id(p) in name_of for p in group):
                for p, copy in zip(group, side_by_side(group, torch.bfloat16), strict=True):
                    made[name_of[id(p)]] = copy
        copies = {
            name: made[name]
            if name in made
            else p.detach().to(torch.bfloat16).contiguous().requires_grad_()
            for name, p in masters.items()
        }
        return cls(model, optimizer, kernel, copies, masters)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's forward with the copies in place of their masters."""
        out: torch.Tensor = functional_call(self.model, self.copies, (tokens,))
        return out

    def clip_and_step(self, max_norm: float) -> torch.Tensor:
        """Clips all gradients to `max_norm` together, as `clip_grad_norm_` does, steps every
        parameter and drops the copies' gradients; returns the norm before clipping. The
        masters of the copies hold no gradient, so `optimizer.step()` updates only the other
        parameters (embedding, norm gains) and the kernel the rest."""
        others = [p.grad for p in self.model.parameters() if p.grad is not None]
        squares = sum(self.kernel.sum_squares(g) for g in self._with_grad())
        if others:
            squares += float(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g) for g in others])) ** 2)  # fmt: skip
        norm = math.sqrt(squares)
        scale = min(1.0, max_norm / (norm + 1e-6)) if math.isfinite(norm) else math.nan
        if scale != 1.0:
            torch._foreach_mul_(others, scale)
        self.optimizer.step()
        for name, copy in self.copies.items():
            if copy.grad is None:
                continue
            master = self.masters[name]
            group = self.groups[name]
            state = self.optimizer.state[master]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(master, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(master, memory_format=torch.preserve_format)
            state["step"] += 1
            self.kernel.step(
                master.data, state["exp_avg"], state["exp_avg_sq"], copy.grad, copy.data,
                step=int(state["step"]), lr=float(group["lr"]), betas=group["betas"],
                eps=group["eps"], weight_decay=group["weight_decay"], grad_scale=scale,
            )  # fmt: skip
            copy.grad = None
        return torch.tensor(norm)

    def _with_grad(self) -> list[torch.Tensor]:
        return [c.grad for c in self.copies.values() if c.grad is not None]
