"""Corpora become token shards once, and batches are a pure function of (seed, sample index)."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rainier.train import data
from rainier.train.tokenizer import END_OF_TEXT, load_tokenizer


def test_files_come_from_paths_folders_and_globs(corpus: Path) -> None:
    by_folder = data.find_files([str(corpus)])
    assert {p.suffix for p in by_folder} == {".txt", ".md", ".py", ".jsonl"}
    assert data.find_files([str(corpus / "notes-*.txt"), str(corpus / "notes-1.txt")]) == sorted(
        p.resolve() for p in corpus.glob("notes-*.txt")
    )
    assert data.find_files([str(corpus / "ignored.bin")]) == [(corpus / "ignored.bin").resolve()]
    with pytest.raises(data.DataError, match="missing"):
        data.find_files([str(corpus / "missing")])


def test_jsonl_records_give_their_text_field(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert list(data.iter_pieces([path], "body")) == [("one", True), ("two", True)]
    with pytest.raises(data.DataError, match=r"r\.jsonl:1: no string field 'text'"):
        list(data.iter_pieces([path], "text"))
    path.write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(data.DataError, match=r"r\.jsonl:2: not valid JSON"):
        list(data.iter_pieces([path], "text"))


def test_prepare_tokenizes_once_and_round_trips(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "SHARD_TOKENS", 3000)
    monkeypatch.setattr(data, "ENCODE_BATCH_CHARS", 2000)
    monkeypatch.setattr(data, "PIECE_CHARS", 700)
    files = data.find_files([str(corpus)])
    finished = subprocess.Popen(["true"])
    finished.wait()
    name = data.fingerprint(files, 512, 0.1, "text")
    stale = tmp_path / f".tmp-{name}-{socket.gethostname()}-{finished.pid}"
    stale.mkdir()
    root = data.prepare([str(corpus)], tmp_path, 512, val_fraction=0.1)
    assert root.name == name and not stale.exists()
    manifest = (root / "manifest.json").stat().st_mtime_ns
    assert data.prepare([str(corpus)], tmp_path, 512, val_fraction=0.1) == root
    assert (root / "manifest.json").stat().st_mtime_ns == manifest
    assert data.prepare([str(corpus)], tmp_path, 600, val_fraction=0.1) != root

    c = data.open_corpus(root)
    assert len(c.shards) > 2, "several shards, so reads cross their boundaries"
    assert c.val_tokens == int((c.train_tokens + c.val_tokens) * 0.1)
    tokenizer = load_tokenizer(c.tokenizer_path)
    assert tokenizer.get_vocab_size() <= 512
    assert c.eos_id == tokenizer.token_to_id(END_OF_TEXT)

    whole = np.concatenate([c.train().read(0, c.train_tokens), c.val().read(0, c.val_tokens)])
    documents = [
        tokenizer.decode(d.tolist()) for d in np.split(whole, np.where(whole == c.eos_id)[0])
    ]
    documents = [d for d in documents if d]
    expected: list[str] = []
    for path in files:
        with path.open(newline="") as f:
            if path.suffix == ".jsonl":
                expected += [json.loads(line)["text"] for line in f]
            else:
                expected.append(f.read())
    assert documents == expected


def test_samples_depend_only_on_seed_and_index(corpus: Path, data_cache: Path) -> None:
    c = data.open_corpus(data.prepare([str(corpus)], data_cache, 512, val_fraction=0.05))
    a = data.Sampler(c.train(), 32, seed=3)
    b = data.Sampler(c.train(), 32, seed=3)
    assert np.array_equal(a.batch(100, 8), b.batch(100, 8))
    assert np.array_equal(a.batch(100, 8), np.concatenate([b.batch(100, 4), b.batch(104, 4)]))
    assert not np.array_equal(a.batch(0, 8), data.Sampler(c.train(), 32, seed=4).batch(0, 8))
    assert a.batch(0, 2).shape == (2, 33)


def test_an_epoch_visits_every_window_once(corpus: Path, data_cache: Path) -> None:
    c = data.open_corpus(data.prepare([str(corpus)], data_cache, 512, val_fraction=0.05))
    sampler = data.Sampler(c.train(), 32, seed=0)
    stream = c.train().read(0, c.train_tokens)
    starts = set()
    for i in range(sampler.windows):
        window = sampler.sample(i)
        matches = np.flatnonzero(stream[: len(stream) - 32] == window[0])
        start = next(int(m) for m in matches if np.array_equal(stream[m : m + 33], window))
        starts.add(start)
    offsets = {s % 32 for s in starts}
    assert len(starts) == sampler.windows and len(offsets) == 1
    assert not np.array_equal(sampler.sample(0), sampler.sample(sampler.windows))


def test_a_corpus_smaller_than_one_sequence_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("tiny corpus")
    c = data.open_corpus(data.prepare([str(tmp_path / "a.txt")], tmp_path / "cache", 300))
    with pytest.raises(data.DataError, match="--seq-len"):
        data.Sampler(c.train(), 256, seed=0)
