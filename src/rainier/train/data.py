"""Text corpora -> memory-mapped token shards (built once), and batches that depend only on
(seed, sample index), so a resumed run, or the same run on another number of ranks, sees exactly
the same sequences.

A prepared corpus is a folder named by a fingerprint of its inputs: the sources (path, size,
modification time), the vocabulary size and the split. It holds `tokenizer.json`, `shard-*.bin`
files of token ids (documents separated by the end-of-text token) and `manifest.json`, written
last, inside a temporary folder that is renamed into place; a folder without a manifest is never
read. The last `val_fraction` of the token stream is held out for validation.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rainier.train.tokenizer import end_of_text_id, train_tokenizer

TEXT_SUFFIXES = (".txt", ".md", ".py", ".jsonl")
FORMAT_VERSION = 1
SHARD_TOKENS = 1 << 26
TOKENIZER_SAMPLE_CHARS = 256 << 20
ENCODE_BATCH_CHARS = 8 << 20
PIECE_CHARS = 4 << 20


class DataError(ValueError):
    """The corpus the user named is unusable; the message says which path and why."""


def find_files(specs: list[str]) -> list[Path]:
    """Files named directly, found under folders (recursively) or matched by globs.

    A file named directly is read whatever its suffix; inside folders and globs only
    TEXT_SUFFIXES count, so a checkout with binaries in it can be passed as it is.
    """
    found: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _is_text(p))
        else:
            matches = sorted(
                Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()
            )
            matches = [p for p in matches if _is_text(p)]
        if not matches:
            raise DataError(f"{spec}: no {'/'.join(TEXT_SUFFIXES)} files found")
        for p in matches:
            found.setdefault(p.resolve(), None)
    return list(found)


def stdlib_sample(dest: Path, max_bytes: int, max_file_bytes: int = 64 << 10) -> Path:
    """Copy a bounded, deterministic sample of the Python standard library's own modules into
    `dest`: a corpus every machine with Python has, so a demo or benchmark downloads nothing.

    Top-level modules in name order, skipping very large ones so the sample spans many files.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for src in sorted(stdlib.glob("*.py")):
        size = src.stat().st_size
        if size > max_file_bytes or total + size > max_bytes:
            continue
        shutil.copyfile(src, dest / src.name)
        total += size
    if total == 0:
        raise DataError(f"{stdlib}: no standard library sources found")
    return dest


def _is_text(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


Piece = tuple[str, bool]


def iter_pieces(files: list[Path], text_field: str) -> Iterator[Piece]:
    """Documents as (text, ends_document) pieces, so memory stays flat on any file size.

    A .jsonl record is one document; any other file is one document, read PIECE_CHARS at a
    time and cut after a newline (byte-level BPE never merges across one, so the tokens are
    those of the whole file).
    """
    for path in files:
        if path.suffix.lower() == ".jsonl":
            yield from ((text, True) for text in _records(path, text_field))
            continue
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            carry = ""
            while chunk := f.read(PIECE_CHARS):
                text = carry + chunk
                cut = text.rfind("\n") + 1
                if cut == 0 and len(text) < 4 * PIECE_CHARS:
                    carry = text
                    continue
                cut = cut or len(text)
                yield text[:cut], False
                carry = text[cut:]
            yield carry, True


def _records(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: no string field {text_field!r}")
            yield text


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus: where it lives and how its token stream splits."""

    root: Path
    shards: list[tuple[str, int]]
    dtype: str
    train_tokens: int
    val_tokens: int
    eos_id: int

    @property
    def tokenizer_path(self) -> Path:
        return self.root / "tokenizer.json"

    def train(self) -> TokenStream:
        return TokenStream(self, 0, self.train_tokens)

    def val(self) -> TokenStream:
        return TokenStream(self, self.train_tokens, self.train_tokens + self.val_tokens)


def fingerprint(files: list[Path], vocab_size: int, val_fraction: float, text_field: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT_VERSION, vocab_size, val_fraction, text_field]).encode())
    for p in files:
        st = p.stat()
        h.update(f"\0{p}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def prepare(
    specs: list[str],
    cache_root: Path,
    vocab_size: int,
    val_fraction: float = 0.01,
    text_field: str = "text",
) -> Path:
    """The prepared corpus folder for these inputs, tokenizing only if it does not exist yet."""
    files = find_files(specs)
    root = cache_root / fingerprint(files, vocab_size, val_fraction, text_field)
    if (root / "manifest.json").exists():
        return root
    cache_root.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{root.name}-{socket.gethostname()}-"
    for stale in cache_root.glob(prefix + "*"):
        pid = stale.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    # the random part: ranks in PID namespaces of their own share a host name and a pid
    tmp = cache_root / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _build(files, tmp, vocab_size, val_fraction, text_field)
        try:
            tmp.rename(root)
        except OSError:
            if not (root / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _alive(pid: int) -> bool:
    """Whether a process that left a temporary folder on this host may still be writing it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _build(
    files: list[Path], out: Path, vocab_size: int, val_fraction: float, text_field: str
) -> None:
    tokenizer = train_tokenizer(_head(iter_pieces(files, text_field)), vocab_size)
    tokenizer.save(str(out / "tokenizer.json"))
    eos = end_of_text_id(tokenizer)
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    shards: list[tuple[str, int]] = []
    pending: list[np.ndarray] = []
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        if not pending_tokens:
            return
        name = f"shard-{len(shards):05d}.bin"
        with (out / name).open("wb") as f:
            np.concatenate(pending).astype(dtype).tofile(f)
            f.flush()
            os.fsync(f.fileno())
        shards.append((name, pending_tokens))
        pending, pending_tokens = [], 0

    for batch in _batches(iter_pieces(files, text_field)):
        texts = [text for text, _ in batch]
        for enc, (_, ends) in zip(
            tokenizer.encode_batch(texts, add_special_tokens=False), batch, strict=True
        ):
            ids = np.asarray([*enc.ids, eos] if ends else enc.ids, dtype=np.int64)
            pending.append(ids)
            pending_tokens += len(ids)
        if pending_tokens >= SHARD_TOKENS:
            flush()
    flush()
    total = sum(n for _, n in shards)
    if total == 0:
        raise DataError("the corpus has no text")
    val_tokens = int(total * val_fraction)
    manifest = {
        "version": FORMAT_VERSION,
        "dtype": np.dtype(dtype).name,
        "shards": [{"file": name, "tokens": n} for name, n in shards],
        "train_tokens": total - val_tokens,
        "val_tokens": val_tokens,
        "eos_id": eos,
        "vocab_size": vocab_size,
        "sources": [str(p) for p in files],
    }
    _write_synced(out / "manifest.json", json.dumps(manifest, indent=1).encode())


def _head(pieces: Iterator[Piece]) -> Iterator[str]:
    """Train the tokenizer on the first few hundred MB: merges barely change past that."""
    seen = 0
    for text, _ in pieces:
        yield text
        seen += len(text)
        if seen >= TOKENIZER_SAMPLE_CHARS:
            return


def _batches(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece[0])
        if size >= ENCODE_BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def open_corpus(root: Path) -> Corpus:
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(f"{root}: prepared with an unknown format {manifest.get('version')!r}")
    return Corpus(
        root=root,
        shards=[(s["file"], int(s["tokens"])) for s in manifest["shards"]],
        dtype=manifest["dtype"],
        train_tokens=int(manifest["train_tokens"]),
        val_tokens=int(manifest["val_tokens"]),
        eos_id=int(manifest["eos_id"]),
    )


class TokenStream:
    """A contiguous range of the corpus's token stream, read across shard boundaries."""

    def __init__(self, corpus: Corpus, start: int, end: int) -> None:
        self.start, self.end = start, end
        self._maps = [
            np.memmap(corpus.root / name, dtype=corpus.dtype, mode="r", shape=(n,))
            for name, n in corpus.shards
        ]
        self._offsets = np.cumsum([0] + [n for _, n in corpus.shards])

    def __len__(self) -> int:
        return self.end - self.start

    def read(self, pos: int, length: int) -> np.ndarray:
        lo = self.start + pos
        hi = lo + length
        if pos < 0 or hi > self.end:
            raise IndexError(f"tokens [{pos}, {pos + length}) outside a stream of {len(self)}")
        parts = []
        shard = int(np.searchsorted(self._offsets, lo, side="right")) - 1
        while lo < hi:
            base = int(self._offsets[shard])
            take = min(hi, int(self._offsets[shard + 1])) - lo
            parts.append(self._maps[shard][lo - base : lo - base + take])
            lo += take
            shard += 1
        return np.concatenate(parts).astype(np.int64)


class Sampler:
    """Sequences of `seq_len + 1` tokens, the n-th drawn by a pure function of (seed, n).

    The stream is cut into non-overlapping windows; every epoch visits all of them once, in
    an order and at a starting offset drawn from (seed, epoch). A run therefore needs to
    remember only how many samples it has consumed to continue exactly where it stopped, and
    a global batch is the same whether one rank draws it or several ranks draw slices of it.
    """

    def __init__(self, stream: TokenStream, seq_len: int, seed: int) -> None:
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        self.windows = (len(stream) - 1) // seq_len
        if self.windows < 1:
            raise DataError(
                f"the training split has {len(stream)} tokens, fewer than one sequence of "
                f"{seq_len + 1}; add text or lower --seq-len"
            )
        self._epoch: tuple[int, np.ndarray, int] | None = None

    def _order(self, epoch: int) -> tuple[np.ndarray, int]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            slack = len(self.stream) - 1 - self.windows * self.seq_len
            offset = int(rng.integers(0, slack + 1))
            self._epoch = (epoch, rng.permutation(self.windows), offset)
        return self._epoch[1], self._epoch[2]

    def sample(self, index: int) -> np.ndarray:
        epoch, i = divmod(index, self.windows)
        order, offset = self._order(epoch)
        return self.stream.read(offset + int(order[i]) * self.seq_len, self.seq_len + 1)

    def batch(self, first: int, count: int) -> np.ndarray:
        return np.stack([self.sample(first + i) for i in range(count)])


def validation_windows(stream: TokenStream, seq_len: int, limit: int) -> list[np.ndarray]:
    """The first `limit` non-overlapping windows of the validation split: the same every eval."""
    count = min(limit, (len(stream) - 1) // seq_len) if len(stream) > seq_len else 0
    return [stream.read(i * seq_len, seq_len + 1) for i in range(count)]
