from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rainier.serve.tiny_model import build_tiny_llama


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread() -> None:
    """Tiny models gain nothing from intra-op threads, and on a busy machine the threads'
    spinning costs far more than the work itself."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tied_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-llama-tied"),
        tie_word_embeddings=True,
        num_kv_heads=1,
        chat_template=None,
        seed=1,
    )
