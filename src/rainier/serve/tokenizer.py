"""The model directory's tokenizer: `tokenizer.json`, plus what `tokenizer_config.json` adds
(special tokens, chat template) for the HTTP layer to format chats the way the model was
trained to read them."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from rainier.serve.config import ModelFormatError
from rainier.serve.detokenizer import (
    ByteLevelDetokenizer,
    ByteTable,
    Detokenizer,
    IncrementalDetokenizer,
)


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE spells each byte as one printable character: printable Latin-1 bytes as
    themselves, the rest as code points from 256 up, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[str, int] = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


BYTE_LEVEL_ALPHABET = _byte_level_alphabet()


def _decoder_types(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The decoder's steps, in order (one unless it is a `Sequence`)."""
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return tuple(str(d.get("type")) for d in parts if isinstance(d, dict))


def _byte_level_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level BPE piece spells, or None if it is not spelled in that alphabet."""
    if not all(ch in BYTE_LEVEL_ALPHABET for ch in piece):
        return None
    return bytes(BYTE_LEVEL_ALPHABET[ch] for ch in piece)


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


def _chat_template(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        named = {t.get("name"): t.get("template") for t in raw if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


@dataclass
class ModelTokenizer:
    tokenizer: Tokenizer
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    eos_token_ids: tuple[int, ...]
    decoder_types: tuple[str, ...] = ()

    @property
    def byte_level(self) -> bool:
        return "ByteLevel" in self.decoder_types

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelTokenizer:
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelFormatError(f"{path}: not found")
        tokenizer = Tokenizer.from_file(str(path))
        config: dict[str, Any] = {}
        config_path = model_dir / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
        template = _chat_template(config.get("chat_template"))
        template_file = model_dir / "chat_template.jinja"
        if template is None and template_file.is_file():
            template = template_file.read_text()
        bos = _token_content(config.get("bos_token"))
        eos = _token_content(config.get("eos_token"))
        eos_id = tokenizer.token_to_id(eos) if eos else None
        return cls(
            tokenizer=tokenizer,
            chat_template=template,
            bos_token=bos,
            eos_token=eos,
            eos_token_ids=() if eos_id is None else (eos_id,),
            decoder_types=_decoder_types(tokenizer),
        )

    def detokenizer(
        self, prompt_ids: Sequence[int], skip_special_tokens: bool = True
    ) -> Detokenizer:
        """The fastest detokenizer that decodes exactly as `decode` does for this tokenizer."""
        if self.byte_table is not None:
            return ByteLevelDetokenizer(self.byte_table, prompt_ids, skip_special_tokens)
        return IncrementalDetokenizer(self.tokenizer, prompt_ids, skip_special_tokens)

    @functools.cached_property
    def byte_table(self) -> ByteTable | None:
        """Every token's bytes, when decoding is exactly byte-level: the decoder is `ByteLevel`
        alone, and the added tokens are ASCII (so decoding spells them as themselves); else
        None. Built once, a few hundred milliseconds for a large vocabulary; the engine builds
        it at start-up rather than on its first request."""
        if self.decoder_types != ("ByteLevel",):
            return None
        added = self.tokenizer.get_added_tokens_decoder()
        if not all(t.content.isascii() for t in added.values()):
            return None
        pieces: list[bytes] = []
        for token_id in range(self.tokenizer.get_vocab_size(with_added_tokens=True)):
            token = added.get(token_id)
            if token is not None:
                pieces.append(token.content.encode())
                continue
            piece = self.tokenizer.id_to_token(token_id)
            spelled = _byte_level_bytes(piece) if piece is not None else b""
            if spelled is None:
                return None
            pieces.append(spelled)
        return ByteTable(pieces, frozenset(i for i, t in added.items() if t.special))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes a token stands for, even when they are part of a character."""
        spelled = _byte_level_bytes(self.tokenizer.id_to_token(token_id) or "")
        if self.byte_level and spelled is not None:
            return spelled
        return self.tokenizer.decode([token_id], skip_special_tokens=False).encode()

    def token_text(self, token_id: int) -> str:
        """A token as OpenAI shows it in logprobs: its text, or `bytes:\\xNN...` when its
        bytes are not valid UTF-8 on their own."""
        raw = self.token_bytes(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
