"""A tiny random Llama in the HF directory layout, for tests, benchmarks and demos.

The weights come from `transformers` (so the layout is the real one, not our reading of it) and
the tokenizer is a byte-level BPE trained here on a small generated corpus, so nothing is
downloaded. `transformers` is a development dependency, imported only when a model is built.

    python -m rainier.serve.tiny_model OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

_WORD_TEXT = (
    "the a compute cloud tenant contract model deploy train token batch cache block prefix "
    "scheduler queue stream request answer question river mountain forest rainier snow "
    "café naïve über straße 東京 日本語 données 🙂 🚀 ∑ λ → 1 2 3 42 100 , . ! ? ; : ( ) - "
    "hello world again always never quickly slowly every many some one two three"
)
WORDS = tuple(_WORD_TEXT.split())

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus(num_lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20))) for _ in range(num_lines)
    ]


def train_tokenizer(lines: list[str], vocab_size: int = 512) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
    )
    return tokenizer


def build_tiny_llama(
    out_dir: Path,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    vocab_size: int = 512,
    chat_template: str | None = CHAT_TEMPLATE,
    seed: int = 0,
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = corpus(seed=seed)
    (out_dir / "corpus.txt").write_text("\n".join(lines))
    tokenizer = train_tokenizer(lines, vocab_size)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=0,
        eos_token_id=1,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer_config: dict[str, object] = {"bos_token": "<s>", "eos_token": "</s>"}
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rainier.serve.tiny_model OUT_DIR")
    print(build_tiny_llama(Path(sys.argv[1])))
