"""Fixtures every train test shares: one corpus, one data cache, one uninterrupted reference run."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from .trainkit import ControlPlaneStub, Reference, clean_env, run_to_end, train_args, write_corpus


@pytest.fixture
def in_process() -> Iterator[None]:
    """For tests that call the runtime in-process: it installs its own SIGTERM/SIGINT handlers
    and sets torch's thread count, which the rest of the test process should not inherit."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    threads = torch.get_num_threads()
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def reference(
    corpus: Path, data_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    root = tmp_path_factory.mktemp("reference")
    control = ControlPlaneStub()
    env = clean_env(
        RAINIER_CONTROL_URL=control.url,
        RAINIER_TOKEN="secret-token",
        RAINIER_JOB_ID="job-123",
        RAINIER_JOB_NAME="reference",
        RAINIER_FLAVOR="cpu",
    )
    args = train_args(
        corpus,
        data_cache,
        checkpoint_dir=str(root / "ckpt"),
        checkpoint_every="4",
        keep="2",
        export=str(root / "export"),
    )
    run = run_to_end(args, env)
    yield Reference(run, root / "ckpt", root / "export", control)
    control.close()
