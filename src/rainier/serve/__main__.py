"""`python -m rainier.serve --model DIR`: one replica of a deployment.

With `--port 0` the operating system picks the port; once the server accepts connections it
prints one JSON line on stdout, `{"event": "listening", "host": ..., "port": N, "model": ...}`,
for a person or supervisor to read. Started by rainier (`RAINIER_CONTROL_URL`, `RAINIER_JOB_ID`
and `RAINIER_TOKEN` set), it also registers the port with the control plane over HTTP (see
`rainier.serve.registration`). Nothing else is written to stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import socket
import sys
from pathlib import Path

import torch
import uvicorn

from rainier.allocator import keep_freed_memory
from rainier.serve.async_engine import EngineClient
from rainier.serve.config import EngineConfig, ModelFormatError
from rainier.serve.engine import LLMEngine
from rainier.serve.engine_process import EngineStartError, ProcessEngine
from rainier.serve.registration import advertised_host, register_in_background
from rainier.serve.server import create_app
from rainier.storage.access import StorageAccess
from rainier.storage.cache import default_cache_dir, fetch_published
from rainier.storage.fs import StorageError
from rainier.storage.location import basename, is_url


def local_model(model: str) -> Path:
    """The model folder to load: `model` itself, or for a storage URL a node-local copy of the
    whole upload published there (`rainier.storage.cache`)."""
    if not is_url(model):
        return Path(model)
    return fetch_published(model, default_cache_dir() / "models", StorageAccess.from_env())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rainier.serve", description="Serve a Llama-format model over /v1."
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model directory (HF Llama layout), or the storage URL of one, downloaded first",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port")
    parser.add_argument("--served-model-name", help="name clients use (default: directory name)")
    parser.add_argument("--kv-memory-mb", type=float, default=256.0, help="KV cache pool size")
    parser.add_argument("--max-batch-tokens", type=int, default=2048, help="tokens per step")
    parser.add_argument("--max-num-seqs", type=int, default=128, help="sequences per step")
    parser.add_argument(
        "--max-model-len", type=int, help="cap on prompt + completion tokens (default: model's)"
    )
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--dtype", default="float32", help="float32, bfloat16 or float16 (weights and KV cache)"
    )
    parser.add_argument("--torch-threads", type=int, default=0, help="0 = torch's default")
    parser.add_argument(
        "--engine",
        choices=("process", "thread"),
        default="process",
        help="run the engine core in a process of its own (default) or on a thread of the server",
    )
    parser.add_argument(
        "--shutdown-grace-s", type=float, default=10.0, help="on SIGTERM, time to finish streams"
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--access-log", action="store_true", help="log each request (stderr)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model_dir = local_model(args.model)
    except (StorageError, ValueError, OSError) as exc:
        print(f"rainier.serve: --model: {exc}", file=sys.stderr)
        return 2
    name = args.served_model_name or (
        basename(args.model) if is_url(args.model) else model_dir.resolve().name
    )
    try:
        config = EngineConfig(
            kv_memory_mb=args.kv_memory_mb,
            block_size=args.block_size,
            max_batch_tokens=args.max_batch_tokens,
            max_num_seqs=args.max_num_seqs,
            enable_prefix_caching=not args.no_prefix_caching,
            device=device,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
        )
        engine: EngineClient | LLMEngine
        if args.engine == "process":
            engine = ProcessEngine.launch(model_dir, config, args.torch_threads)
        else:
            keep_freed_memory()
            engine = LLMEngine.from_model_dir(model_dir, config)
    except (ModelFormatError, ValueError, OSError, EngineStartError) as exc:
        print(f"rainier.serve: {exc}", file=sys.stderr)
        return 2

    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(2048)
    except OSError as exc:
        print(f"rainier.serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]

    def announce() -> None:
        line = {"event": "listening", "host": args.host, "port": port, "model": name}
        print(json.dumps(line), flush=True)
        register_in_background(port, advertised_host(args.host))

    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in log_config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    app = create_app(engine, name, on_ready=announce)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=args.log_level,
            access_log=args.access_log,
            timeout_graceful_shutdown=args.shutdown_grace_s,
            log_config=log_config,
        )
    )
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
