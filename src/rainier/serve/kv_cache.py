"""Who owns which block of the KV pool: block tables, ref counts and the prefix cache.

The pool is a fixed number of blocks allocated once, so memory never grows with traffic; what
varies is only this bookkeeping. A full block is identified by a hash of its tokens chained to
the hash of every block before it, so equal hashes mean equal prefixes and the block's keys and
values can be shared. Freed blocks keep their hash until they are handed out again: a later
request with the same prefix (or a preempted request coming back) finds them still filled.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None


def chain_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """A cryptographic hash, because tenants choose the tokens: a collision would leak or mix
    one request's cached keys into another's."""
    return hashlib.sha256(parent + array("q", tokens).tobytes()).digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks <= 0:
            raise ValueError("the KV pool needs at least one block")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[bytes, int] = {}
        self._tables: dict[str, list[int]] = {}
        self._hashes: dict[str, list[bytes]] = {}
        self._committed: dict[str, int] = {}
        self.prefix_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def block_table(self, seq_id: str) -> list[int]:
        return self._tables.get(seq_id, [])

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _full_block_hashes(self, seq_id: str, tokens: Sequence[int], limit: int) -> list[bytes]:
        hashes = self._hashes.setdefault(seq_id, [])
        bs = self.block_size
        while len(hashes) < limit:
            i = len(hashes)
            parent = hashes[-1] if hashes else b""
            hashes.append(chain_hash(parent, tokens[i * bs : (i + 1) * bs]))
        return hashes[:limit]

    def hashes_completed(
        self, seq_id: str, tokens: Sequence[int], start: int, end: int
    ) -> list[bytes]:
        """Hashes of the full blocks that computing tokens [start, end) will complete."""
        if not self.enable_prefix_caching:
            return []
        first, last = start // self.block_size, end // self.block_size
        return self._full_block_hashes(seq_id, tokens, last)[first:]

    def next_block_hash(self, seq_id: str, tokens: Sequence[int], index: int) -> bytes | None:
        """The hash of full block `index` of a prompt, if the cache could ever serve it."""
        if not self.enable_prefix_caching or index >= (len(tokens) - 1) // self.block_size:
            return None
        return self._full_block_hashes(seq_id, tokens, index + 1)[index]

    def find_cached_prefix(self, seq_id: str, tokens: Sequence[int]) -> list[int]:
        """Blocks already holding this sequence's leading full blocks. The last token is never
        served from the cache: its logits are what the step has to produce."""
        if not self.enable_prefix_caching:
            return []
        limit = (len(tokens) - 1) // self.block_size
        found: list[int] = []
        for block_hash in self._full_block_hashes(seq_id, tokens, limit):
            block_id = self._cached.get(block_hash)
            if block_id is None:
                break
            found.append(block_id)
        return found

    def allocate(self, seq_id: str, num_tokens: int, cached: Sequence[int] = ()) -> bool:
        """Grow `seq_id`'s table to hold `num_tokens`; `cached` (only on first allocation) are
        prefix blocks to share. All or nothing: False leaves the manager unchanged."""
        table = self._tables.get(seq_id, [])
        revived = sum(1 for b in cached if self.blocks[b].ref_count == 0)
        fresh = self.blocks_needed(num_tokens) - len(table) - len(cached)
        if max(fresh, 0) + revived > len(self._free):
            return False
        self._tables[seq_id] = table
        for block_id in cached:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            table.append(block_id)
        self.prefix_hit_tokens += len(cached) * self.block_size
        for _ in range(fresh):
            block_id, _none = self._free.popitem(last=False)
            block = self.blocks[block_id]
            if block.block_hash is not None:
                if self._cached.get(block.block_hash) == block_id:
                    del self._cached[block.block_hash]
                block.block_hash = None
            block.ref_count = 1
            table.append(block_id)
        return True

    def commit(self, seq_id: str, tokens: Sequence[int], num_computed: int) -> None:
        """Publish the full blocks whose keys and values are now written, for others to share."""
        if not self.enable_prefix_caching:
            return
        table = self._tables.get(seq_id, [])
        num_full = min(num_computed // self.block_size, len(table))
        start = self._committed.get(seq_id, 0)
        if num_full <= start:  # most steps of a decode: no block filled
            return
        hashes = self._full_block_hashes(seq_id, tokens, num_full)
        self._committed[seq_id] = num_full
        for index in range(start, num_full):
            block_hash = hashes[index]
            block = self.blocks[table[index]]
            if block.block_hash is None and block_hash not in self._cached:
                block.block_hash = block_hash
                self._cached[block_hash] = block.block_id

    def free(self, seq_id: str) -> None:
        """Release a sequence's blocks, tail first, so the tail is also evicted first."""
        for block_id in reversed(self._tables.pop(seq_id, [])):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
        self._hashes.pop(seq_id, None)
        self._committed.pop(seq_id, None)
