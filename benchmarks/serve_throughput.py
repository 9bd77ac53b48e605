"""Serving throughput and latency in the manner of vLLM's `bench serve`, with baselines.

One run, one set of weights (a small random Llama built on the spot, fp32, nothing
downloaded), one dataset drawn from a seeded distribution: prompt lengths log-normal, output
lengths exponential (long-tailed, as chat traffic is), both clipped.

1. A control plane (`rainier server`) with one deployment of the model: its replica is the
   real OpenAI server, `python -m rainier.serve`, started by the executor.
2. Engine, measured at the client over streaming HTTP straight to the replica:
   max-concurrency mode (`--concurrency`, 32) for the headline figures, then Poisson arrivals
   at `--rate` requests/s. Per request: TTFT, TPOT ((latency - TTFT) / (tokens - 1)) and the
   gaps between streamed chunks (ITL); per run: requests/s and output tokens/s. The client
   shares the machine with what it measures, so it is a lean one, as vLLM's (aiohttp) is:
   keep-alive HTTP/1.1 on `httptools` and uvloop (the gateway's own upstream client).
3. Gateway: the same short requests sent in turn straight to the replica and through the
   control plane's `/v1` (auth, routing, metering, streaming); `gateway_overhead_p50_ms` is
   the p50 of the gateway's latencies minus the p50 of the direct ones;
   `gateway_requests_per_s` is what the gateway passes at `--concurrency` in flight.
4. Baselines, while no server runs, on the same weights and the same torch threads: HF
   `transformers` `generate` one request at a time (the first `--sequential-requests`
   requests; it is a rate), and in static batches of `--concurrency`, left-padded, each batch
   running until its longest output. Output tokens/s counts the tokens each request asked
   for, in every mode. The one-at-a-time rate is measured twice, before the servers start and
   after they are gone, and averaged: the speed of a shared machine drifts over the minute
   between, and the engine's run sits in the middle.

5. The matrix (`serve_matrix.py`): the tiny model and a ~100M Llama (1024 wide, 12 layers,
   16 / 4 heads) x fp32 / bf16 x 1 / 2 threads, each a replica driven at vLLM's measured load
   (128 prompt / 128 output tokens, 16 in flight); with `vllm_peer.py` and vLLM installed,
   each row also carries `vllm_tok_s` and `vs_vllm`.

Prints one JSON line last, with the load average before and after (the machine is shared).

    python benchmarks/serve_throughput.py [--requests 64] [--concurrency 32] [--rate 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvloop

from rainier.api.upstream import UpstreamPool
from rainier.serve.tiny_model import build_tiny_llama

sys.path.insert(0, str(Path(__file__).parent))
from serve_client import Req, dataset, drive, one, pct, summary
from serve_matrix import ClientLoad, measure_matrix


def gateway_figures(
    replica: str, gateway: str, key: str, model: str, reqs: list[Req], pairs: int, conc: int
) -> dict[str, float]:
    """Latency of short requests (1 output token) straight to the replica and through the
    gateway, taken in turn so both see the same load; then the gateway's request rate."""
    auth = {"Authorization": f"Bearer {key}"}
    short = [Req(r.prompt[:16], 1) for r in reqs]

    async def paired() -> tuple[list[float], list[float]]:
        direct: list[float] = []
        through: list[float] = []
        pool = UpstreamPool(read_timeout_s=60.0)
        try:
            for i in range(pairs + 10):
                req = short[i % len(short)]
                order = [(replica, {}, direct), (gateway, auth, through)]
                for url, headers, sink in order if i % 2 else order[::-1]:
                    result = await one(pool, url, model, req, headers)
                    if not result.ok:
                        raise SystemExit(f"request failed: {result.error}")
                    if i >= 10:
                        sink.append(result.latency)
        finally:
            pool.close()
        return direct, through

    direct, through = uvloop.run(paired())
    many = [short[i % len(short)] for i in range(max(conc * 4, 128))]
    results, wall = uvloop.run(drive(gateway, model, many, concurrency=conc, headers=auth))
    summary(results, wall)
    results_d, wall_d = uvloop.run(drive(replica, model, many, concurrency=conc))
    summary(results_d, wall_d)
    return {
        "gateway_overhead_p50_ms": round((pct(through, 50) - pct(direct, 50)) * 1000, 3),
        "direct_latency_p50_ms": round(pct(direct, 50) * 1000, 3),
        "gateway_latency_p50_ms": round(pct(through, 50) * 1000, 3),
        "gateway_requests_per_s": round(len(results) / wall, 1),
        "direct_requests_per_s": round(len(results_d) / wall_d, 1),
    }


# -- the control plane and its replica ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def control_plane(
    home: Path, model_dir: Path, threads: int, dtype: str
) -> Iterator[tuple[str, str, str]]:
    """(control plane URL, a tenant key, the replica's URL) of a deployment of `model_dir`."""
    port = free_port()
    env = {
        **os.environ,
        "RAINIER_HOME": str(home),
        "RAINIER_DATABASE_URL": f"sqlite:///{home / 'rainier.db'}",
        "RAINIER_PORT": str(port),
    }
    env.pop("RAINIER_API_KEY", None)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rainier.cli.main", "server"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _ok(f"{url}/healthz"), 60, "the control plane")
        op = httpx.post(f"{url}/api/v1/init").json()["key"]
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {op}"}, timeout=30)
        c.post("/api/v1/nodes", json={"kind": "Node", "name": "n1", "flavor": "cpu", "chips": 8})
        c.post("/api/v1/tenants", json={"kind": "Tenant", "name": "bench"})
        made = c.post("/api/v1/keys", json={"tenant": "bench", "role": "admin"})
        key = made.json()["key"]
        t = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        doc = {
            "kind": "Deployment",
            "name": "bench",
            "model": str(model_dir),
            "replicas": {"min": 1, "max": 1},
            "chips_per_replica": threads,
            "max_batch_tokens": 2048,
            "dtype": dtype,
        }
        t.post("/api/v1/deployments", json=doc).raise_for_status()

        def ready() -> str | None:
            d = t.get("/api/v1/deployments/bench").json()
            urls = [r["url"] for r in d["replica_list"] if r["ready"] and r["url"]]
            return urls[0] if urls else None

        replica = wait(ready, 300, "the replica")
        yield url, key, replica
        t.delete("/api/v1/deployments/bench")
        wait(
            lambda: (
                not c.get("/api/v1/jobs", params={"state": ["running", "stopping"]}).json()["items"]
            ),
            60,
            "the replica to stop",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- the baselines ----------------------------------------------------------------------------------


class HFBaselines:
    """HF `transformers` `generate` on the same weights and torch threads as the engine."""

    def __init__(self, model_dir: Path, threads: int, dtype: str) -> None:
        import torch
        from transformers import LlamaForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = LlamaForCausalLM.from_pretrained(
            str(model_dir), torch_dtype=torch.bfloat16 if dtype == "bf16" else torch.float32
        ).eval()
        self.generate(DUMMY_WARMUP)

    def generate(self, group: list[Req]) -> None:
        torch, pad = self.torch, 2
        width = max(len(r.prompt) for r in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, r in enumerate(group):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[i, width - len(r.prompt) :] = 1
        longest = max(r.output_len for r in group)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=pad,
            )
        assert out.shape[1] == width + longest

    def sequential(self, reqs: list[Req]) -> float:
        """Output tokens/s, one request at a time."""
        start = time.perf_counter()
        for r in reqs:
            self.generate([r])
        return sum(r.output_len for r in reqs) / (time.perf_counter() - start)

    def static(self, reqs: list[Req], batch: int) -> tuple[float, float]:
        """Output tokens/s and seconds, in left-padded batches each running to its longest."""
        start = time.perf_counter()
        for i in range(0, len(reqs), batch):
            self.generate(reqs[i : i + batch])
        wall = time.perf_counter() - start
        return sum(r.output_len for r in reqs) / wall, wall


DUMMY_WARMUP = [Req([5, 6, 7, 8], 4), Req([9, 10], 4)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--requests",
        type=int,
        default=512,
        help="max-concurrency mode (default 512: at 16x the concurrency the run measures the "
        "steady state at that concurrency; the drain of the last long outputs, at fewer in "
        "flight, is a fixed second or so, a fifth of a run of 256)",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=8.0, help="Poisson arrivals per second")
    parser.add_argument("--poisson-requests", type=int, default=32)
    parser.add_argument(
        "--sequential-requests",
        type=int,
        default=32,
        help="requests of the one-at-a-time baseline (the first ones; it is a rate). 32, whose "
        "lengths are close to the whole set's: the first 8 alone ask for 40%% longer outputs "
        "than the mean, which spreads HF's fixed cost per request over more tokens",
    )
    parser.add_argument(
        "--static-requests",
        type=int,
        default=128,
        help="requests of the static-batch baseline (the first ones; it is a rate)",
    )
    parser.add_argument("--gateway-pairs", type=int, default=100)
    parser.add_argument("--prompt-median", type=int, default=48)
    parser.add_argument("--prompt-max", type=int, default=256)
    parser.add_argument("--output-mean", type=int, default=48)
    parser.add_argument("--output-max", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), default="fp32", help="headline run and baselines"
    )
    parser.add_argument(
        "--matrix-shapes",
        default="tiny,100m",
        help="the model x dtype x threads matrix under a fixed load (128 prompt / 128 output "
        "tokens, 16 in flight, as vLLM was measured): shapes tiny, 100m; empty skips it",
    )
    parser.add_argument("--matrix-dtypes", default="fp32,bf16")
    parser.add_argument("--matrix-threads", default="1,2")
    parser.add_argument("--matrix-requests", type=int, default=32)
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        # A deployment serves a folder its tenant owns: under the tenant's storage prefix.
        model_dir = build_tiny_llama(
            home / "storage" / "bench" / "model",
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 8 // 3,
            num_layers=args.layers,
            num_heads=max(4, args.hidden // 64),
            num_kv_heads=max(2, args.hidden // 128),
            max_position_embeddings=1024,
        )
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        reqs = dataset(args.requests, args.seed, vocab, args)
        poisson = dataset(args.poisson_requests, args.seed + 1, vocab, args)
        hf = HFBaselines(model_dir, args.threads, args.dtype)
        sequential = reqs[: args.sequential_requests]
        hf_before = hf.sequential(sequential)
        with control_plane(home, model_dir, args.threads, args.dtype) as (gateway, key, replica):
            uvloop.run(drive(replica, "bench", reqs[:4], concurrency=4))
            results, wall = uvloop.run(drive(replica, "bench", reqs, concurrency=args.concurrency))
            engine = summary(results, wall)
            results, wall = uvloop.run(
                drive(replica, "bench", poisson, rate=args.rate, seed=args.seed)
            )
            poisson_figures = summary(results, wall)
            gw = gateway_figures(
                replica, gateway, key, "bench", reqs, args.gateway_pairs, args.concurrency
            )
        hf_after = hf.sequential(sequential)
        hf_static, hf_static_wall = hf.static(reqs[: args.static_requests], args.concurrency)
        del hf
        matrix = []
        if args.matrix_shapes:
            matrix = measure_matrix(
                Path(tmp),
                args.matrix_shapes.split(","),
                args.matrix_dtypes.split(","),
                [int(t) for t in args.matrix_threads.split(",")],
                ClientLoad(requests=args.matrix_requests),
            )

    engine_tok_s = engine["output_tok_s"]
    hf_sequential = (hf_before + hf_after) / 2
    result = {
        "engine_output_tok_s": engine_tok_s,
        "hf_static_output_tok_s": round(hf_static, 1),
        "hf_sequential_output_tok_s": round(hf_sequential, 1),
        "vs_static": round(engine_tok_s / hf_static, 2),
        "vs_sequential": round(engine_tok_s / hf_sequential, 2),
        "ttft_p50_s": engine["ttft_p50_s"],
        "ttft_p99_s": engine["ttft_p99_s"],
        "tpot_p50_s": engine["tpot_p50_s"],
        "itl_p99_s": engine["itl_p99_s"],
        "gateway_overhead_p50_ms": gw["gateway_overhead_p50_ms"],
        "gateway_requests_per_s": gw["gateway_requests_per_s"],
        "engine": engine,
        "poisson": {"rate": args.rate, "requests": args.poisson_requests, **poisson_figures},
        "gateway": gw,
        "hf_static_wall_s": round(hf_static_wall, 2),
        "hf_sequential_before_after": [round(hf_before, 1), round(hf_after, 1)],
        "matrix": matrix,
        "setup": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "hidden": args.hidden,
            "layers": args.layers,
            "threads": args.threads,
            "dtype": args.dtype,
            "prompt_len": f"lognormal median {args.prompt_median} [8, {args.prompt_max}]",
            "output_len": f"exponential mean {args.output_mean} [4, {args.output_max}]",
            "mean_output_len": round(statistics.mean(r.output_len for r in reqs), 1),
            "sequential_requests": args.sequential_requests,
            "static_requests": min(args.static_requests, args.requests),
        },
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
