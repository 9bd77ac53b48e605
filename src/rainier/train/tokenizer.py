"""Byte-level BPE trained on the job's own corpus: nothing is downloaded, any text is encodable.

A byte-level alphabet means no unknown tokens, and the single special token doubles as the
document separator in the token stream and as BOS/EOS in the exported model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_nonempty(texts), trainer=trainer)
    return tokenizer


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    return (t for t in texts if t)


def end_of_text_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(END_OF_TEXT)
    if token_id is None:
        raise ValueError(f"tokenizer has no {END_OF_TEXT} token")
    return int(token_id)


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
