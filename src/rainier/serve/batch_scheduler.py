"""Which sequences run in the next step and how many tokens each computes.

Every step spends one token budget. Running sequences go first, oldest first, each taking what
it still needs (one token when decoding, the rest of its prompt, capped, when prefilling), so a
long prompt is prefilled in chunks across steps while the others keep decoding. Waiting
sequences are admitted in arrival order with what budget is left.

When a running sequence needs a block and the pool is empty, the newest running sequence is
preempted: its blocks are released and it returns to the waiting queue to be recomputed later.
Its tokens are kept, so the request never fails and, under greedy sampling, its output is the
same as if it had never been interrupted. No new sequence is admitted in a step that preempted.

A waiting sequence whose next uncached block is being computed in this very step by another
sequence (the `n` choices of one request, many requests behind one system prompt) waits one
step instead, and then reads that block from the prefix cache rather than computing it again.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from rainier.serve.kv_cache import BlockManager
from rainier.serve.sequence import SeqStatus, Sequence


@dataclass
class SchedulerOutput:
    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)


class BatchScheduler:
    def __init__(self, block_manager: BlockManager, max_batch_tokens: int, max_num_seqs: int):
        self.block_manager = block_manager
        self.max_batch_tokens = max_batch_tokens
        self.max_num_seqs = max_num_seqs
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        bisect.insort(self.waiting, seq, key=lambda s: s.arrival_index)

    def remove(self, seq_id: str) -> Sequence | None:
        """Take a sequence out wherever it is and release its blocks."""
        for queue in (self.running, self.waiting):
            for seq in queue:
                if seq.seq_id == seq_id:
                    queue.remove(seq)
                    self.block_manager.free(seq_id)
                    return seq
        return None

    def finish(self, seq: Sequence) -> None:
        seq.status = SeqStatus.FINISHED
        if seq in self.running:
            self.running.remove(seq)
        self.block_manager.free(seq.seq_id)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq.seq_id)
        seq.num_computed = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.add(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_batch_tokens
        bm = self.block_manager
        self.running.sort(key=lambda s: s.arrival_index)
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            num_new = min(seq.num_tokens - seq.num_computed, budget)
            while not bm.allocate(seq.seq_id, seq.num_computed + num_new):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is SeqStatus.WAITING:
                break
            out.scheduled.append((seq, num_new))
            budget -= num_new
            index += 1
        if out.preempted or not self.waiting:
            return out
        in_flight: set[bytes] = set()
        for seq, num_new in out.scheduled:
            end = seq.num_computed + num_new
            in_flight.update(bm.hashes_completed(seq.seq_id, seq.token_ids, seq.num_computed, end))
        index = 0
        while index < len(self.waiting) and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[index]
            cached = bm.find_cached_prefix(seq.seq_id, seq.token_ids)
            if bm.next_block_hash(seq.seq_id, seq.token_ids, len(cached)) in in_flight:
                index += 1
                continue
            num_computed = len(cached) * bm.block_size
            num_new = min(seq.num_tokens - num_computed, budget)
            if not bm.allocate(seq.seq_id, num_computed + num_new, cached):
                break
            self.waiting.pop(index)
            end = num_computed + num_new
            in_flight.update(bm.hashes_completed(seq.seq_id, seq.token_ids, num_computed, end))
            seq.num_computed = num_computed
            if not seq.admitted_once:
                seq.num_cached_tokens = num_computed
                seq.admitted_once = True
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append((seq, num_new))
            budget -= num_new
        return out
