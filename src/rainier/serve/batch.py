"""One engine step as flat tensors: every scheduled token of every sequence, end to end.

The model sees a single ragged batch (no padding of the token dimension), which is what lets
prefill chunks and decodes share a step. Attention needs per-sequence views of the paged cache;
those index tensors are built once here and reused by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScheduledChunk:
    """`token_ids` at positions `start_pos ...` of a sequence whose KV lives in `block_table`."""

    token_ids: list[int]
    start_pos: int
    block_table: list[int]
    needs_logits: bool


@dataclass(frozen=True)
class DecodeGroup:
    """Sequences computing one token each, attended in one padded call."""

    token_index: torch.Tensor
    gather_slots: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class PrefillChunk:
    """A run of several query tokens of one sequence, attended causally against its context."""

    token_start: int
    num_tokens: int
    gather_slots: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class BatchInput:
    token_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    decode: DecodeGroup | None
    prefills: list[PrefillChunk]
    logits_index: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])


def _slots(block_table: list[int], start: int, end: int, block_size: int) -> torch.Tensor:
    first, last = start // block_size, (end + block_size - 1) // block_size
    blocks = torch.tensor(block_table[first:last], dtype=torch.long)
    flat = (blocks[:, None] * block_size + torch.arange(block_size)[None, :]).flatten()
    offset = start - first * block_size
    return flat[offset : offset + end - start]


def build_batch(chunks: list[ScheduledChunk], block_size: int, device: torch.device) -> BatchInput:
    token_ids: list[int] = []
    positions: list[int] = []
    slot_mapping: list[torch.Tensor] = []
    logits_index: list[int] = []
    decode_rows: list[tuple[int, torch.Tensor]] = []
    prefills: list[PrefillChunk] = []
    for chunk in chunks:
        n = len(chunk.token_ids)
        end = chunk.start_pos + n
        first = len(token_ids)
        token_ids.extend(chunk.token_ids)
        positions.extend(range(chunk.start_pos, end))
        slot_mapping.append(_slots(chunk.block_table, chunk.start_pos, end, block_size))
        if chunk.needs_logits:
            logits_index.append(first + n - 1)
        context = _slots(chunk.block_table, 0, end, block_size)
        if n == 1:
            decode_rows.append((first, context))
            continue
        key_pos = torch.arange(end, device=device)
        query_pos = torch.arange(chunk.start_pos, end, device=device)
        prefills.append(
            PrefillChunk(
                token_start=first,
                num_tokens=n,
                gather_slots=context.to(device),
                mask=key_pos[None, :] <= query_pos[:, None],
            )
        )
    decode = None
    if decode_rows:
        width = max(len(ctx) for _, ctx in decode_rows)
        slots = torch.zeros((len(decode_rows), width), dtype=torch.long)
        mask = torch.zeros((len(decode_rows), width), dtype=torch.bool)
        for row, (_, ctx) in enumerate(decode_rows):
            slots[row, : len(ctx)] = ctx
            mask[row, : len(ctx)] = True
        decode = DecodeGroup(
            token_index=torch.tensor([i for i, _ in decode_rows], dtype=torch.long, device=device),
            gather_slots=slots.to(device),
            mask=mask[:, None, None, :].to(device),
        )
    return BatchInput(
        token_ids=torch.tensor(token_ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        slot_mapping=torch.cat(slot_mapping).to(device),
        decode=decode,
        prefills=prefills,
        logits_index=torch.tensor(logits_index, dtype=torch.long, device=device),
    )
