"""What the train tests share: a small corpus written on the spot, real `python -m rainier.train`
processes whose JSON lines can be awaited with a deadline, and a stand-in control plane."""

from __future__ import annotations

import json
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

DEADLINE_S = 120.0
WORDS = (
    "the", "a", "model", "learns", "tokens", "from", "text", "while", "gradients", "flow",
    "through", "layers", "of", "attention", "and", "every", "step", "moves", "weights",
    "toward", "lower", "loss", "so", "batches", "look", "familiar",
)  # fmt: skip


def write_corpus(root: Path, seed: int = 0) -> Path:
    """A few kinds of files with enough repeated structure for BPE to find merges."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "."

    for i in range(6):
        (root / f"notes-{i}.txt").write_text("\n".join(sentence() for _ in range(120)))
    (root / "readme.md").write_text("# Title\n\n" + "\n\n".join(sentence() for _ in range(80)))
    (root / "code.py").write_text(
        "\n".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(150))
    )
    with (root / "records.jsonl").open("w") as f:
        for _ in range(150):
            f.write(json.dumps({"text": sentence(), "id": rng.randint(0, 10**6)}) + "\n")
    (root / "ignored.bin").write_bytes(bytes(range(256)))
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any launcher variables it may have inherited."""
    launcher = (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAINIER_") and k not in launcher
    }
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    """A `python -m rainier.train` process; its stdout JSON lines arrive on a queue."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rainier.train", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or clean_env(),
        )
        self.records: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = DEADLINE_S
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout_s}s\n{self.stderr}")
            try:
                record = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if record is None:
                raise AssertionError(f"process ended before a matching line\n{self.stderr}")
            self.records.append(record)
            if predicate(record):
                return record

    def resume_from_hold(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self, timeout_s: float = DEADLINE_S) -> int:
        """Exit code, after every stdout line has been collected into `records`."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout_s)
        while (record := self._lines.get(timeout=timeout_s)) is not None:
            self.records.append(record)
        return rc

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "event" not in r]


def run_to_end(args: list[str], env: dict[str, str] | None = None) -> Run:
    run = Run(args, env)
    rc = run.finish()
    assert rc == 0, run.stderr
    return run


def final_state(checkpoint_dir: Path) -> dict[str, Any]:
    from rainier.train.checkpoint import load_latest

    found = load_latest(checkpoint_dir)
    assert found is not None, f"no checkpoint in {checkpoint_dir}"
    return found[1]


def final_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = final_state(checkpoint_dir)["model"]
    return weights


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


class ControlPlaneStub:
    """Records what the runtime POSTs, answering like the real API would."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None, dict[str, Any]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.posts.append((self.path, self.headers.get("Authorization"), body))
                self.send_response(201)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def train_args(corpus: Path, data_cache: Path, steps: int = 16, **options: str) -> list[str]:
    """The flags every determinism test shares; `options` adds or replaces flags."""
    flags = {
        "preset": "tiny",
        "steps": str(steps),
        "batch-size": "4",
        "grad-accum": "2",
        "seq-len": "32",
        "lr": "3e-3",
        "seed": "7",
        "threads": "1",
        "log-every": "1",
        "val-fraction": "0.05",
        "eval-batches": "2",
        "data-cache": str(data_cache),
    }
    flags.update({k.replace("_", "-"): v for k, v in options.items()})
    out = ["--data", str(corpus)]
    for key, value in flags.items():
        out += [f"--{key}", value] if value else [f"--{key}"]
    return out


@dataclass
class Reference:
    """One uninterrupted run that several tests compare against."""

    run: Run
    checkpoint_dir: Path
    export_dir: Path
    control: ControlPlaneStub
