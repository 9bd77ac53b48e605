"""Turning a growing list of token ids into text deltas, safely for streaming.

A byte-level token can end in the middle of a UTF-8 character; decoding it alone yields U+FFFD.
So text is only released once the decoded tail is a whole character, and each step decodes a
small window (a few tokens of context plus the new ones) rather than the whole output, which
also keeps the word-boundary spacing that tokenizers derive from the preceding token.

Stop strings are matched on text, not tokens, and the last few characters are held back while
streaming so a client never sees the beginning of a stop string that is later cut off.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

CONTEXT_TOKENS = 5
REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: Sequence[int], skip_special_tokens: bool = True
    ) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often empty mid-character)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""
        delta = after[len(before) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Whatever is pending at the end of generation, incomplete characters included."""
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        delta = after[len(before) :] if len(after) > len(before) else ""
        self._prefix_offset = self._read_offset = len(self._ids)
        self.text += delta
        return delta


def find_stop(text: str, stop: Sequence[str], searched_up_to: int) -> int | None:
    """Index where the earliest stop string starts, looking only at text that could contain a
    match not already ruled out (`searched_up_to` = length of text checked before)."""
    best: int | None = None
    for s in stop:
        if not s:
            continue
        index = text.find(s, max(0, searched_up_to - len(s) + 1))
        if index != -1 and (best is None or index < best):
            best = index
    return best


def releasable(text: str, stop: Sequence[str], finished: bool) -> int:
    """How much of `text` may be shown now: all of it when finished, else all but a tail that
    could still grow into a stop string."""
    if finished or not stop:
        return len(text)
    hold = max(len(s) for s in stop) - 1
    return max(0, len(text) - hold)
