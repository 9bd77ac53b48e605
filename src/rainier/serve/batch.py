"""One engine step as flat tensors: every scheduled token of every sequence, end to end.

The model sees a single ragged batch (no padding of the token dimension), which is what lets
prefill chunks and decodes share a step. Attention needs per-sequence views of the paged cache;
those index tensors are built once here and reused by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ScheduledChunk:
    """`token_ids` at positions `start_pos ...` of a sequence whose KV lives in `block_table`."""

    token_ids: list[int]
    start_pos: int
    block_table: list[int]
    needs_logits: bool


# Decoding sequences are attended in groups of about this many, of similar context lengths:
# one padded call for the whole batch would pad every row to the longest context.
DECODE_GROUP_ROWS = 8


@dataclass(frozen=True)
class DecodeGroup:
    """Sequences computing one token each (rows `token_start ...` of the batch), attended in
    one padded call. Their context is read whole blocks at a time (`block_ids`, padded with
    block 0 and masked), which copies far fewer, larger pieces than gathering slot by slot."""

    token_start: int
    num_tokens: int
    block_ids: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class PrefillChunk:
    """A run of several query tokens of one sequence, attended causally against its context,
    which is read whole blocks at a time (`block_ids`) and cut to the mask's width."""

    token_start: int
    num_tokens: int
    block_ids: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class BatchInput:
    """`block_tables`, `token_seq` and `context_lens` are what the paged-attention kernel
    reads: each token's row of the block tables and how many positions it sees. `decodes`
    and `prefills` are what attention composed from PyTorch operators needs instead; they are
    empty when the batch was built without them."""

    token_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    decodes: list[DecodeGroup]
    prefills: list[PrefillChunk]
    logits_index: torch.Tensor
    block_size: int
    block_tables: torch.Tensor
    token_seq: torch.Tensor
    context_lens: torch.Tensor
    max_position: int = 0
    # (first row, rows) of each prefill chunk that starts its sequence: its context is its
    # own tokens, so attention needs nothing from the cache.
    fresh_prefills: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])


def _additive(allowed: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A mask to add to the scores: CPU attention converts a boolean mask to this on every
    call, once per layer; built here it is made once per step."""
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, float("-inf")).to(device)


def build_batch(
    chunks: list[ScheduledChunk],
    block_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    groups: bool = True,
) -> BatchInput:
    """Single-token chunks (decodes) are laid out first, shortest context first, so that each
    decode group is a slice of the batch; then multi-token chunks (prefills). `logits_index`
    still lists the chunks that want logits in the order they were given. Attention masks are
    additive, in `dtype` (the model's). `groups=False` leaves out the decode groups and
    prefill masks, which only attention composed from PyTorch operators reads."""
    decodes = sorted(
        (i for i, c in enumerate(chunks) if len(c.token_ids) == 1),
        key=lambda i: chunks[i].start_pos,
    )
    prefills = [i for i, c in enumerate(chunks) if len(c.token_ids) > 1]
    token_ids: list[int] = [chunks[i].token_ids[0] for i in decodes]
    positions: list[int] = [chunks[i].start_pos for i in decodes]
    last_token = {i: row for row, i in enumerate(decodes)}
    tables_in_order = [chunks[i].block_table for i in decodes]
    token_seq = list(range(len(decodes)))
    context_lens = [p + 1 for p in positions]
    slots = [
        t[p // block_size] * block_size + p % block_size
        for t, p in zip(tables_in_order, positions, strict=True)
    ]
    decode_groups: list[DecodeGroup] = []
    for g in range(0, len(decodes) if groups else 0, DECODE_GROUP_ROWS):
        rows = range(g, min(g + DECODE_GROUP_ROWS, len(decodes)))
        num_blocks = -(-max(context_lens[r] for r in rows) // block_size)
        blocks = [tables_in_order[r][:num_blocks] for r in rows]
        blocks = [b + [0] * (num_blocks - len(b)) for b in blocks]
        row_lengths = torch.tensor([context_lens[r] for r in rows], dtype=torch.long)
        mask = torch.arange(num_blocks * block_size)[None, :] < row_lengths[:, None]
        decode_groups.append(
            DecodeGroup(
                token_start=g,
                num_tokens=len(rows),
                block_ids=torch.tensor(blocks, dtype=torch.long, device=device),
                mask=_additive(mask[:, None, None, :], dtype, device),
            )
        )
    prefill_chunks: list[PrefillChunk] = []
    fresh: list[tuple[int, int]] = []
    for i in prefills:
        chunk = chunks[i]
        n = len(chunk.token_ids)
        end = chunk.start_pos + n
        first = len(token_ids)
        if chunk.start_pos == 0:
            fresh.append((first, n))
        token_ids.extend(chunk.token_ids)
        positions.extend(range(chunk.start_pos, end))
        last_token[i] = first + n - 1
        token_seq.extend([len(tables_in_order)] * n)
        tables_in_order.append(chunk.block_table)
        context_lens.extend(range(chunk.start_pos + 1, end + 1))
        table = chunk.block_table
        slots.extend(
            table[q // block_size] * block_size + q % block_size
            for q in range(chunk.start_pos, end)
        )
        if not groups:
            continue
        key_pos = torch.arange(end)
        query_pos = torch.arange(chunk.start_pos, end)
        prefill_chunks.append(
            PrefillChunk(
                token_start=first,
                num_tokens=n,
                block_ids=torch.tensor(
                    chunk.block_table[: -(-end // block_size)], dtype=torch.long, device=device
                ),
                mask=_additive(key_pos[None, :] <= query_pos[:, None], dtype, device),
            )
        )
    logits_index = [last_token[i] for i, c in enumerate(chunks) if c.needs_logits]
    widest = max((len(t) for t in tables_in_order), default=0)
    return BatchInput(
        token_ids=torch.tensor(token_ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        decodes=decode_groups,
        prefills=prefill_chunks,
        logits_index=torch.tensor(logits_index, dtype=torch.long, device=device),
        block_size=block_size,
        block_tables=torch.tensor(
            [t + [0] * (widest - len(t)) for t in tables_in_order], dtype=torch.long
        ).view(len(tables_in_order), widest),
        token_seq=torch.tensor(token_seq, dtype=torch.long),
        context_lens=torch.tensor(context_lens, dtype=torch.long),
        max_position=max(positions, default=0),
        fresh_prefills=fresh,
    )
