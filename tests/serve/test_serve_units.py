"""The pure pieces: block manager, sampling, incremental detokenization, chat templates."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from rainier.serve.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplateError, render_chat
from rainier.serve.detokenizer import (
    ByteLevelDetokenizer,
    IncrementalDetokenizer,
    find_stop,
    releasable,
)
from rainier.serve.kv_cache import BlockManager
from rainier.serve.sampling import (
    SamplingParams,
    filter_logits,
    make_generator,
    sample_batch,
    sample_token,
    token_logprob,
)
from rainier.serve.tokenizer import ModelTokenizer


def test_allocation_is_all_or_nothing() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    assert bm.allocate("a", 9)
    assert bm.num_used_blocks == 3
    assert not bm.allocate("b", 8)
    assert bm.block_table("b") == []
    assert bm.num_used_blocks == 3
    assert bm.allocate("a", 16)
    assert not bm.allocate("a", 17)
    bm.free("a")
    assert bm.num_free_blocks == 4


def test_prefix_blocks_are_found_shared_and_evicted_last_in_first_out() -> None:
    bm = BlockManager(num_blocks=6, block_size=4)
    tokens = list(range(100, 113))
    assert bm.find_cached_prefix("a", tokens) == []
    assert bm.allocate("a", len(tokens))
    bm.commit("a", tokens, len(tokens))
    hits = bm.find_cached_prefix("b", tokens)
    assert hits == bm.block_table("a")[:3]
    assert bm.allocate("b", len(tokens), hits)
    assert [bm.blocks[b].ref_count for b in hits] == [2, 2, 2]
    assert bm.find_cached_prefix("c", [*tokens[:8], 1, 2, 3, 4, 5]) == hits[:2]
    assert bm.find_cached_prefix("d", [7, *tokens[1:]]) == []
    bm.free("a")
    bm.free("b")
    assert bm.num_used_blocks == 0
    assert bm.find_cached_prefix("e", tokens) == hits
    assert bm.allocate("f", 4 * 4)
    assert bm.find_cached_prefix("e2", tokens) == hits[:2]


def test_a_prompt_never_comes_entirely_from_the_cache() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    tokens = list(range(8))
    bm.allocate("a", 8)
    bm.commit("a", tokens, 8)
    assert len(bm.find_cached_prefix("b", tokens)) == 1


def test_block_pool_invariants_under_random_traffic() -> None:
    rng = random.Random(3)
    bm = BlockManager(num_blocks=16, block_size=4)
    live: dict[str, list[int]] = {}
    for step in range(400):
        if live and rng.random() < 0.3:
            seq = rng.choice(list(live))
            bm.free(seq)
            del live[seq]
        else:
            seq = f"s{step}"
            tokens = [rng.randrange(3) for _ in range(rng.randint(1, 20))]
            hits = bm.find_cached_prefix(seq, tokens)
            if bm.allocate(seq, len(tokens), hits):
                bm.commit(seq, tokens, len(tokens))
                live[seq] = tokens
            else:
                bm.free(seq)
        counts = [0] * bm.num_blocks
        for seq in live:
            for block_id in bm.block_table(seq):
                counts[block_id] += 1
        assert counts == [b.ref_count for b in bm.blocks]
        assert bm.num_free_blocks == counts.count(0)


def test_greedy_and_filters() -> None:
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0])
    gen = make_generator(0)
    assert sample_token(logits, SamplingParams(temperature=0.0), gen) == 1
    assert sample_token(logits, SamplingParams(temperature=1.0, top_k=1), gen) == 1
    assert sample_token(logits, SamplingParams(temperature=1.0, top_p=0.01), gen) == 1
    kept = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isinf(kept[[0, 3]]).all() and torch.isfinite(kept[[1, 2]]).all()
    nucleus = filter_logits(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 0, 0.7)
    assert torch.isfinite(nucleus[:2]).all() and torch.isinf(nucleus[2:]).all()


def test_seeded_draws_repeat_and_follow_the_distribution() -> None:
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    params = SamplingParams(temperature=1.0, seed=5)
    draws = [sample_token(logits, params, make_generator(5)) for _ in range(3)]
    assert len(set(draws)) == 1
    gen = make_generator(9)
    counts = [0, 0, 0]
    for _ in range(2000):
        counts[sample_token(logits, params, gen)] += 1
    assert 0.65 < counts[0] / 2000 < 0.75
    assert counts[2] > 0


def test_penalties_and_logprobs() -> None:
    logits = torch.tensor([2.0, 1.9, 0.0])
    params = SamplingParams(temperature=0.0, frequency_penalty=0.5)
    tokens, logprobs = sample_batch(
        torch.stack([logits, logits]),
        [SamplingParams(temperature=0.0, logprobs=2), params],
        [make_generator(0), make_generator(0)],
        [[0], [0]],
    )
    assert tokens == [0, 1]
    first = logprobs[0]
    assert first is not None and first.token_id == 0
    assert first.logprob == pytest.approx(float(torch.log_softmax(logits, -1)[0]))
    assert [t for t, _ in first.top] == [0, 1]
    assert logprobs[1] is None
    assert token_logprob(logits, 2, 0).top == ()


def test_params_are_range_checked() -> None:
    for bad in ({"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}, {"logprobs": 50}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)  # type: ignore[arg-type]


def test_incremental_detokenization_handles_split_characters(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    text = " rainier 𝄞 漢字 ok 🙂 straße ∑→"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text.split())
    prompt = tokenizer.encode("hello", add_special_tokens=True).ids
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detok.push(t) for t in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)
    assert deltas.count("") > 0


def test_byte_level_detokenizer_decodes_as_the_tokenizer_does(tiny_model_dir: Path) -> None:
    model_tokenizer = ModelTokenizer.from_dir(tiny_model_dir)
    tokenizer = model_tokenizer.tokenizer
    text = " rainier 𝄞 漢字 ok 🙂 straße ∑→"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    prompt = tokenizer.encode("hello", add_special_tokens=True).ids
    detok = model_tokenizer.detokenizer(prompt)
    assert isinstance(detok, ByteLevelDetokenizer)
    deltas = [detok.push(t) for t in ids] + [detok.flush()]
    assert "".join(deltas) == detok.text == text
    assert not any("\ufffd" in d for d in deltas) and deltas.count("") > 0
    rng = random.Random(3)
    vocab = tokenizer.get_vocab_size()
    for skip in (True, False):
        for _ in range(30):  # random ids: special tokens, bytes that are no valid UTF-8
            ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 40))]
            detok = model_tokenizer.detokenizer([], skip_special_tokens=skip)
            for t in ids:
                detok.push(t)
            detok.flush()
            assert detok.text == tokenizer.decode(ids, skip_special_tokens=skip), ids


def test_tokenizers_that_are_not_byte_level_decode_window_by_window(tmp_path: Path) -> None:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "▁hello": 1, "▁world": 2}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    model_tokenizer = ModelTokenizer.from_dir(tmp_path)
    detok = model_tokenizer.detokenizer([1])
    assert isinstance(detok, IncrementalDetokenizer)
    assert detok.push(2) + detok.flush() == " world"


def test_stop_matching_and_hold_back() -> None:
    assert find_stop("abc END def", ["END"], 0) == 4
    assert find_stop("abc EN", ["END"], 0) is None
    assert find_stop("abc END", ["END", "c EN"], 5) == 2
    assert find_stop("abc END", ["c E"], 5) is None
    assert releasable("hello wor", ["world"], finished=False) == len("hello wor") - 4
    assert releasable("hello wor", ["world"], finished=True) == len("hello wor")
    assert releasable("hi", [], finished=False) == 2


def test_chat_templates() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text = render_chat(messages, None, bos_token="<s>")
    assert text == "<s><|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"
    assert render_chat(messages, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=False).endswith(
        "hi\n"
    )
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="user first"):
        render_chat(messages, strict)
    with pytest.raises(ChatTemplateError):
        render_chat(messages, "{{ ''.__class__.__mro__[1].__subclasses__() }}")


def test_cli_refuses_a_directory_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rainier.serve.__main__ import main

    assert main(["--model", str(tmp_path), "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert "config.json" in captured.err
    assert captured.out == ""


def test_token_bytes_rebuild_the_text(tiny_model_dir: Path) -> None:
    from rainier.serve.tokenizer import ModelTokenizer

    tok = ModelTokenizer.from_dir(tiny_model_dir)
    assert tok.byte_level and tok.eos_token == "</s>" and tok.eos_token_ids == (1,)
    text = " naïve 𝄞 東京 🚀 ok"
    ids = tok.encode(text, add_special_tokens=False)
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode()
    partial = [i for i in ids if tok.token_text(i).startswith("bytes:")]
    assert partial, "the rare characters should be split into byte tokens"
    assert all("\\x" in tok.token_text(i) for i in partial)


def test_engine_thread_fails_requests_instead_of_hanging(tiny_model_dir: Path) -> None:
    import asyncio

    from rainier.serve.async_engine import AsyncEngine, EngineFailure, Sink
    from rainier.serve.config import EngineConfig
    from rainier.serve.engine import LLMEngine
    from rainier.serve.sequence import RequestOutput

    engine = LLMEngine.from_model_dir(tiny_model_dir, EngineConfig(kv_memory_mb=1, block_size=8))
    runner = AsyncEngine(engine)
    params = SamplingParams(max_tokens=4, temperature=0.0)

    async def last(sink: Sink) -> RequestOutput | EngineFailure:
        while True:
            item = await sink.get()
            if isinstance(item, EngineFailure) or item.finished:
                return item

    def broken(*_: object) -> torch.Tensor:
        raise RuntimeError("device lost")

    async def scenario() -> None:
        runner.start()
        sink: Sink = asyncio.Queue()
        runner.submit("ok", [0, 5, 6], params, sink)
        done = await last(sink)
        assert isinstance(done, RequestOutput) and done.num_output_tokens == 4
        runner.submit("too-long", [5] * 10_000, params, sink)
        refused = await last(sink)
        assert isinstance(refused, EngineFailure) and refused.client_error
        engine.model.forward = broken  # type: ignore[method-assign]
        runner.submit("doomed", [0, 5, 6], params, sink)
        failed = await last(sink)
        assert isinstance(failed, EngineFailure) and not failed.client_error
        assert runner.alive and not engine.has_unfinished()
        await asyncio.to_thread(runner.stop)
        runner.submit("late", [0, 5, 6], params, sink)
        assert isinstance(await last(sink), EngineFailure)

    asyncio.run(scenario())
    assert not runner.alive
