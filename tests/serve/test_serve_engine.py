"""The batched engine against a plain full-recompute reference (HF transformers, same weights)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rainier.serve import step_attention
from rainier.serve.batch import ScheduledChunk, build_batch
from rainier.serve.batch_scheduler import SchedulerOutput
from rainier.serve.config import EngineConfig
from rainier.serve.engine import LLMEngine, RequestError
from rainier.serve.model import read_safetensors
from rainier.serve.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(str(tiny_model_dir))
    return model.eval()


@pytest.fixture(scope="module")
def reference(hf_model: LlamaForCausalLM) -> Callable[[list[int], int], list[int]]:
    """Greedy decoding by recomputing the whole sequence for every token (no cache at all)."""
    memo: dict[tuple[tuple[int, ...], int], list[int]] = {}

    def run(prompt: list[int], max_tokens: int) -> list[int]:
        key = (tuple(prompt), max_tokens)
        if key not in memo:
            ids = list(prompt)
            for _ in range(max_tokens):
                with torch.no_grad():
                    logits = hf_model(torch.tensor([ids])).logits[0, -1]
                ids.append(int(torch.argmax(logits)))
            memo[key] = ids[len(prompt) :]
        return memo[key]

    return run


def make_engine(model_dir: Path, **overrides: object) -> LLMEngine:
    config = EngineConfig(**{"kv_memory_mb": 2.0, "block_size": 8, **overrides})  # type: ignore[arg-type]
    return LLMEngine.from_model_dir(model_dir, config)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


FORWARD_PATHS = ["decoder", "kernels", "torch"]


def engine_on(forward: str, model_dir: Path, **overrides: object) -> LLMEngine:
    """An engine on one of the three forward paths: `decoder`, the whole pass as one C call on
    packed weights, on one thread; `kernels`, the C kernels called one by one around oneDNN's
    matrix products, on two; `torch`, composed from PyTorch operators, which is what runs
    where no C compiler is found. Which of the first two a model gets is timed at load; here
    it is pinned."""
    pinned = "packed" if forward == "decoder" else "onednn"
    threads = 1 if forward == "decoder" else max(2, torch.get_num_threads())
    with torch_threads(threads), pytest.MonkeyPatch.context() as env:
        env.setenv("RAINIER_PRODUCTS", pinned)
        engine = make_engine(model_dir, **overrides)
    if forward == "torch":
        engine.model.kernels = None
    elif engine.model.kernels is None:
        pytest.skip("no C compiler here: only the PyTorch path runs")
    assert (engine.model.decoder is not None) == (forward == "decoder")
    said = {"decoder": "one C call", "kernels": "C kernels around", "torch": "PyTorch operators"}
    assert said[forward] in engine.model.forward_path
    return engine


def random_prompts(engine: LLMEngine, rng: random.Random, count: int) -> list[list[int]]:
    vocab = engine.model_config.vocab_size
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(1, 70))] for _ in range(count)]


def run_arrivals(
    engine: LLMEngine,
    prompts: list[list[int]],
    arrival_steps: list[int],
    params: SamplingParams = GREEDY,
) -> dict[str, list[int]]:
    """Feed prompts at the given step numbers; collect every request's streamed tokens."""
    outputs: dict[str, list[int]] = {}
    pending = sorted(range(len(prompts)), key=lambda i: arrival_steps[i])
    step = 0
    finished: set[str] = set()
    while pending or engine.has_unfinished():
        while pending and arrival_steps[pending[0]] <= step:
            i = pending.pop(0)
            engine.add_request(f"r{i}", prompts[i], params)
            outputs[f"r{i}"] = []
        for out in engine.step():
            outputs[out.request_id].extend(out.token_ids)
            if out.finished:
                finished.add(out.request_id)
        step += 1
        assert step < 5000, "engine made no progress"
    assert finished == set(outputs)
    return outputs


@pytest.fixture(scope="module")
def biased_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with biases on q, k, v and o (`attention_bias`), as Qwen-style models
    have on q, k and v."""
    out = tmp_path_factory.mktemp("tiny-llama-biased")
    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.attention_bias = True
    torch.manual_seed(5)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("_proj.bias"):
                param.normal_(0.0, 0.5)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, out / name)
    return out


@pytest.mark.parametrize("forward", FORWARD_PATHS)
@pytest.mark.parametrize("biased", [False, True])
def test_forward_matches_transformers_logits(
    forward: str, biased: bool, tiny_model_dir: Path, biased_model_dir: Path
) -> None:
    model_dir = biased_model_dir if biased else tiny_model_dir
    hf_model = LlamaForCausalLM.from_pretrained(str(model_dir)).eval()
    engine = engine_on(forward, model_dir)
    prompt = engine.tokenizer.encode("the compute cloud answers every question 東京 🙂")
    table = list(range(engine.block_manager.blocks_needed(len(prompt))))
    batch = build_batch(
        [ScheduledChunk(prompt, 0, table, needs_logits=True)],
        engine.config.block_size,
        engine.model.device,
    )
    batch = dataclasses.replace(batch, logits_index=torch.arange(len(prompt)))
    ours = engine.model.forward(batch, engine.kv_cache)
    with torch.no_grad():
        theirs = hf_model(torch.tensor([prompt])).logits[0]
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_tied_embeddings_and_single_kv_head_load(tied_model_dir: Path) -> None:
    hf = LlamaForCausalLM.from_pretrained(str(tied_model_dir)).eval()
    assert "lm_head.weight" not in read_safetensors(tied_model_dir)
    engine = make_engine(tied_model_dir)
    prompt = engine.tokenizer.encode("hello rainier")
    tokens = run_arrivals(engine, [prompt], [0])["r0"]
    ids = list(prompt)
    for _ in range(GREEDY.max_tokens):
        with torch.no_grad():
            ids.append(int(torch.argmax(hf(torch.tensor([ids])).logits[0, -1])))
    assert tokens == ids[len(prompt) :]


SCENARIOS = {
    "roomy": {"kv_memory_mb": 2.0, "max_batch_tokens": 256},
    "chunked-prefill": {"kv_memory_mb": 2.0, "max_batch_tokens": 24},
    "preempting": {"kv_memory_mb": 0.125, "max_batch_tokens": 64},
    "no-prefix-cache": {"kv_memory_mb": 0.125, "enable_prefix_caching": False},
}


@pytest.mark.parametrize("forward", FORWARD_PATHS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_batched_greedy_equals_full_recompute(
    scenario: str,
    forward: str,
    tiny_model_dir: Path,
    reference: Callable[[list[int], int], list[int]],
) -> None:
    engine = engine_on(forward, tiny_model_dir, **SCENARIOS[scenario])
    rng = random.Random(7)
    prompts = random_prompts(engine, rng, 14)
    shared = prompts[0][:40] if len(prompts[0]) >= 40 else prompts[0] * 3
    prompts += [shared[:40] + p[:10] for p in prompts[:4]]
    arrivals = [rng.randint(0, 12) for _ in prompts]
    budgets: list[int] = []
    schedule = engine.scheduler.schedule

    def recording() -> SchedulerOutput:
        plan = schedule()
        budgets.append(plan.num_tokens)
        return plan

    engine.scheduler.schedule = recording  # type: ignore[method-assign]
    outputs = run_arrivals(engine, prompts, arrivals)
    for i, prompt in enumerate(prompts):
        assert outputs[f"r{i}"] == reference(prompt, GREEDY.max_tokens), f"request r{i}"
    assert max(budgets) <= engine.config.max_batch_tokens
    assert engine.block_manager.num_used_blocks == 0
    if scenario.startswith("chunked"):
        assert max(len(p) for p in prompts) > engine.config.max_batch_tokens
    if scenario in ("preempting", "no-prefix-cache"):
        assert engine.scheduler.num_preemptions > 0
    if scenario != "no-prefix-cache":
        assert engine.block_manager.prefix_hit_tokens > 0


def test_prefix_blocks_are_shared_while_running(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir)
    prompt = list(range(3, 3 + 33))
    engine.add_request("a", prompt, dataclasses.replace(GREEDY, max_tokens=4))
    engine.step()
    engine.add_request("b", prompt, dataclasses.replace(GREEDY, max_tokens=4))
    engine.step()
    table_a = engine.block_manager.block_table("a")
    table_b = engine.block_manager.block_table("b")
    assert table_a[:4] == table_b[:4]
    assert table_a[4] != table_b[4]
    assert all(engine.block_manager.blocks[b].ref_count == 2 for b in table_a[:4])


def test_abort_releases_blocks(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir)
    engine.add_request("a", list(range(3, 40)), GREEDY)
    engine.add_request("b", list(range(5, 30)), GREEDY)
    engine.step()
    assert engine.block_manager.num_used_blocks > 0
    assert engine.abort("a") and engine.abort("b")
    assert not engine.abort("a")
    assert engine.block_manager.num_used_blocks == 0
    assert not engine.has_unfinished()
    assert engine.step() == []


def test_seeded_sampling_is_independent_of_the_batch(tiny_model_dir: Path) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=1234, ignore_eos=True)
    prompt = list(range(10, 30))

    def sample(with_others: bool, seed: int) -> list[int]:
        engine = make_engine(tiny_model_dir)
        prompts = [prompt] + ([list(range(40, 90)), list(range(5, 9))] if with_others else [])
        p = dataclasses.replace(params, seed=seed)
        return run_arrivals(engine, prompts, [0, 1, 3][: len(prompts)], p)["r0"]

    alone = sample(False, 1234)
    assert sample(True, 1234) == alone
    assert len({tuple(sample(False, s)) for s in (1, 2, 3)}) > 1


def test_stop_string_cuts_text_and_is_never_streamed(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir)
    prompt = engine.tokenizer.encode("the river")
    engine.add_request("free", prompt, dataclasses.replace(GREEDY, max_tokens=30))
    full = ""
    while engine.has_unfinished():
        full += "".join(o.text for o in engine.step())
    assert len(full) > 8
    stop = full[5:8]
    engine.add_request("stopped", prompt, dataclasses.replace(GREEDY, max_tokens=30, stop=(stop,)))
    deltas: list[str] = []
    last = None
    while engine.has_unfinished():
        for out in engine.step():
            deltas.append(out.text)
            last = out
    assert last is not None and last.finished
    assert last.finish_reason == "stop" and last.stop_reason == stop
    assert "".join(deltas) == full[: full.index(stop)]


def test_eos_stops_unless_ignored(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir)
    eos = next(iter(engine.eos_token_ids))
    prompt = list(range(3, 12))
    first = run_arrivals(engine, [prompt], [0], dataclasses.replace(GREEDY, max_tokens=3))["r0"]
    params = dataclasses.replace(GREEDY, max_tokens=8, stop_token_ids=(first[1],))
    engine.add_request("x", prompt, params)
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    assert outs[-1].finish_reason == "stop" and outs[-1].stop_reason == first[1]
    assert outs[-1].num_output_tokens == 2
    assert eos in engine.eos_token_ids


def test_rejects_prompts_that_cannot_fit(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir, kv_memory_mb=0.125)
    assert engine.block_manager.num_blocks == 32
    assert engine.max_model_len == 32 * 8
    with pytest.raises(RequestError) as err:
        engine.add_request("x", [5] * engine.max_model_len, GREEDY)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(RequestError) as err:
        engine.add_request("y", [5] * 10, dataclasses.replace(GREEDY, max_tokens=10_000))
    assert err.value.param == "max_tokens"
    assert not engine.has_unfinished()


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
    ids=lambda r: r["rope_type"],
)
def test_scaled_rope_matches_transformers(rope: dict[str, object], tmp_path: Path) -> None:
    from transformers import LlamaConfig

    from rainier.serve.model import LlamaModel

    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=1,
        vocab_size=300,
        max_position_embeddings=1024,
        rope_parameters=rope,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    model = LlamaModel.load(tmp_path, torch.device("cpu"))
    assert model.config.rope_scaling is not None
    ids = list(range(3, 203))
    cache = model.new_kv_cache(num_blocks=13, block_size=16)
    batch = build_batch([ScheduledChunk(ids, 0, list(range(13)), True)], 16, torch.device("cpu"))
    ours = model.forward(dataclasses.replace(batch, logits_index=torch.arange(len(ids))), cache)
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_the_newest_sequence_is_preempted_and_still_completes(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir, kv_memory_mb=0.125)
    params = dataclasses.replace(GREEDY, max_tokens=150)
    engine.add_request("old", list(range(3, 103)), params)
    engine.step()
    engine.add_request("new", list(range(7, 107)), params)
    lengths: dict[str, int] = {}
    saw_preemption = False
    while engine.has_unfinished():
        for out in engine.step():
            lengths[out.request_id] = out.num_output_tokens
        if engine.scheduler.num_preemptions and not saw_preemption:
            saw_preemption = True
            assert [s.seq_id for s in engine.scheduler.running] == ["old"]
            assert [s.seq_id for s in engine.scheduler.waiting] == ["new"]
    assert saw_preemption
    assert lengths == {"old": 150, "new": 150}


@pytest.mark.parametrize("products", ["packed", "onednn"])
def test_bfloat16_halves_the_cache_and_stays_close(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, products: str
) -> None:
    """On either bf16 path: the one-call decoder on AMX tiles (where the CPU has AMX), or the
    kernels around oneDNN's products."""
    full = make_engine(tiny_model_dir, kv_memory_mb=1.0)
    monkeypatch.setenv("RAINIER_PRODUCTS", products)
    half = make_engine(tiny_model_dir, kv_memory_mb=1.0, dtype="bfloat16")
    if products == "packed" and half.model.decoder is None:
        pytest.skip("no AMX here (or no C compiler): no bf16 decoder")
    assert (half.model.decoder is not None) == (products == "packed")
    assert half.kv_cache.dtype == torch.bfloat16
    assert half.block_manager.num_blocks == 2 * full.block_manager.num_blocks
    prompt = full.tokenizer.encode("the compute cloud answers every question")
    logits = []
    for engine in (full, half):
        table = list(range(engine.block_manager.blocks_needed(len(prompt))))
        batch = build_batch([ScheduledChunk(prompt, 0, table, True)], 8, torch.device("cpu"))
        batch = dataclasses.replace(batch, logits_index=torch.arange(len(prompt)))
        logits.append(engine.model.forward(batch, engine.kv_cache))
    assert logits[1].dtype == torch.float32
    torch.testing.assert_close(logits[1], logits[0], atol=0.5, rtol=0.05)
    agree = (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean()
    assert agree >= 0.75


def test_identical_prompts_arriving_together_compute_the_prefix_once(
    tiny_model_dir: Path, reference: Callable[[list[int], int], list[int]]
) -> None:
    engine = make_engine(tiny_model_dir)
    prompt = list(range(3, 43))
    budgets: list[int] = []
    schedule = engine.scheduler.schedule

    def recording() -> SchedulerOutput:
        plan = schedule()
        budgets.append(plan.num_tokens)
        return plan

    engine.scheduler.schedule = recording  # type: ignore[method-assign]
    outputs = run_arrivals(engine, [prompt] * 3, [0, 0, 0])
    assert budgets[:2] == [40, 1 + 8 + 8]
    assert engine.block_manager.prefix_hit_tokens == 2 * 32
    expected = reference(prompt, GREEDY.max_tokens)
    assert outputs == {"r0": expected, "r1": expected, "r2": expected}


@pytest.mark.parametrize(
    ("block_size", "max_batch_tokens", "kv_memory_mb", "max_num_seqs"),
    [(1, 7, 0.06, 4), (3, 17, 0.05, 64), (5, 40, 0.08, 3), (16, 9, 0.25, 128)],
)
def test_odd_shapes_still_equal_full_recompute(
    block_size: int,
    max_batch_tokens: int,
    kv_memory_mb: float,
    max_num_seqs: int,
    tiny_model_dir: Path,
    reference: Callable[[list[int], int], list[int]],
) -> None:
    engine = make_engine(
        tiny_model_dir,
        block_size=block_size,
        max_batch_tokens=max_batch_tokens,
        kv_memory_mb=kv_memory_mb,
        max_num_seqs=max_num_seqs,
    )
    rng = random.Random(block_size)
    prompts = random_prompts(engine, rng, 8)
    prompts += [[*prompts[0][:30], 5, 6, 7], prompts[0][:30]]
    arrivals = [rng.randint(0, 20) for _ in prompts]
    outputs = run_arrivals(engine, prompts, arrivals)
    for i, prompt in enumerate(prompts):
        assert outputs[f"r{i}"] == reference(prompt, GREEDY.max_tokens), f"request r{i}"
    assert engine.block_manager.num_used_blocks == 0


def test_max_model_len_caps_the_context(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir, max_model_len=64)
    assert engine.max_model_len == 64
    with pytest.raises(RequestError):
        engine.add_request("x", [5] * 60, dataclasses.replace(GREEDY, max_tokens=5))
    outputs = run_arrivals(engine, [[5] * 60], [0], dataclasses.replace(GREEDY, max_tokens=4))
    assert len(outputs["r0"]) == 4


def test_sharded_checkpoints_load_the_same_weights(
    tiny_model_dir: Path, hf_model: LlamaForCausalLM, tmp_path: Path
) -> None:
    hf_model.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    sharded = read_safetensors(tmp_path)
    single = read_safetensors(tiny_model_dir)
    assert sharded.keys() == single.keys()
    assert all(torch.equal(sharded[k], single[k]) for k in single)


def test_the_kernels_refuse_a_batch_that_points_outside_the_cache(tiny_model_dir: Path) -> None:
    engine = make_engine(tiny_model_dir)
    if engine.model.kernels is None:
        pytest.skip("no C compiler here: only the PyTorch path runs")
    blocks = engine.kv_cache.shape[2] // engine.config.block_size
    prompt = [5, 6, 7]
    beyond_rotary = engine.model.cos.shape[0]
    cases = [([blocks], 0), ([-1], 0), (list(range(beyond_rotary // 8 + 1)), beyond_rotary)]
    for table, start in cases:
        batch = build_batch([ScheduledChunk(prompt, start, table, True)], 8, torch.device("cpu"))
        with pytest.raises(IndexError, match="outside"):
            engine.model.forward(batch, engine.kv_cache)
    with pytest.raises(IndexError):  # a table too short for its context never becomes a batch
        build_batch([ScheduledChunk(prompt, 8, [0], True)], 8, torch.device("cpu"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_decoder_kernel_is_its_kernels_called_one_by_one(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """Bit for bit, logits and cache, over a prefill and then a step mixing a decode, a
    chunk of a longer prompt and a new prompt, some rows wanting logits and some not; in
    float32 on the packed panels, in bf16 on the AMX tiles with a bf16 cache. (The kernels
    one by one attend every token through the paged kernel here, as the decoder does; the
    dense path for fresh prefills is held to them in the next test.)"""
    monkeypatch.setattr(step_attention, "DENSE_MIN_TOKENS", 1 << 30)
    monkeypatch.setenv("RAINIER_PRODUCTS", "packed")
    with torch_threads(1):
        engine = make_engine(tiny_model_dir, dtype=dtype)
    model = engine.model
    if model.decoder is None:
        pytest.skip(f"no C compiler here, or no AMX for {dtype}: no one-call decoder")
    assert model.decoder.cache_dtype == engine.kv_cache.dtype == getattr(torch, dtype)
    decoder = model.decoder
    rng = random.Random(3)
    vocab = engine.model_config.vocab_size
    a, b, c = ([rng.randrange(3, vocab) for _ in range(n)] for n in (20, 16, 4))
    steps = [
        [ScheduledChunk(a, 0, [0, 1, 2], True), ScheduledChunk(b[:9], 0, [3, 4], False)],
        [
            ScheduledChunk([7], 20, [0, 1, 2], True),
            ScheduledChunk(b[9:], 9, [3, 4], True),
            ScheduledChunk(c, 0, [5], True),
        ],
    ]
    caches = [engine.kv_cache.clone(), engine.kv_cache.clone()]
    for chunks in steps:
        batch = build_batch(chunks, engine.config.block_size, torch.device("cpu"), groups=False)
        model.decoder = decoder
        fused = model.forward(batch, caches[0])
        model.decoder = None
        one_by_one = model.forward(batch, caches[1])
        assert fused.shape == (len(batch.logits_index), vocab)
        assert torch.equal(fused, one_by_one)
        assert torch.equal(caches[0], caches[1])
    assert caches[0].any()
    index = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="hidden rows"):
        decoder(torch.zeros(1, 3), caches[0], index, index, index[None], 8, index, index, index)
    other = torch.float32 if dtype == "bfloat16" else torch.bfloat16
    with pytest.raises(ValueError, match="KV cache"):
        hidden = torch.zeros(1, engine.model_config.hidden_size)
        decoder(hidden, caches[0].to(other), index, index, index[None], 8, index, index, index)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fresh_first", [False, True])
def test_fresh_prefills_attended_densely_match_the_paged_kernel(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, fresh_first: bool
) -> None:
    """A step with a decode, fresh prompts long enough for the dense path and a chunk that
    continues a prompt, in both orders (the paged rows then are a prefix of the batch, or
    not): logits and cache as when every token goes through the paged kernel."""
    monkeypatch.setenv("RAINIER_PRODUCTS", "onednn")
    engine = make_engine(tiny_model_dir, dtype=dtype)
    model = engine.model
    if model.kernels is None:
        pytest.skip("no C compiler here: only the PyTorch path runs")
    rng = random.Random(8)
    vocab = engine.model_config.vocab_size
    a, b, c, d = ([rng.randrange(3, vocab) for _ in range(n)] for n in (21, 30, 24, 17))
    first = [ScheduledChunk(a, 0, [0, 1, 2], False), ScheduledChunk(b[:10], 0, [3, 4, 5, 6], False)]
    fresh = [ScheduledChunk(c, 0, [7, 8, 9], True), ScheduledChunk(d, 0, [10, 11, 12], True)]
    going_on = [
        ScheduledChunk([5], 21, [0, 1, 2], True),
        ScheduledChunk(b[10:], 10, [3, 4, 5, 6], True),
    ]
    second = fresh + going_on if fresh_first else going_on + fresh
    caches = [engine.kv_cache.clone(), engine.kv_cache.clone()]
    for chunks in (first, second):
        batch = build_batch(chunks, engine.config.block_size, torch.device("cpu"), groups=False)
        assert len(batch.fresh_prefills) == sum(c.start_pos == 0 for c in chunks)
        dense = model.forward(batch, caches[0])
        with monkeypatch.context() as paged_only:
            paged_only.setattr(step_attention, "DENSE_MIN_TOKENS", 1 << 30)
            paged = model.forward(batch, caches[1])
        tolerance = (
            {"atol": 1e-4, "rtol": 1e-4} if dtype == "float32" else {"atol": 0.1, "rtol": 0.05}
        )
        torch.testing.assert_close(dense, paged, **tolerance)
        assert torch.equal(dense.argmax(-1), paged.argmax(-1))
        torch.testing.assert_close(caches[0].float(), caches[1].float(), **tolerance)
