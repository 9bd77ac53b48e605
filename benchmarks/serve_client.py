"""The streaming client of the serving benchmarks, lean as vLLM's `bench serve` one is.

Keep-alive HTTP/1.1 on `httptools` and uvloop (the gateway's own upstream client): the client
shares the machine with what it measures. Per request: TTFT, TPOT ((latency - TTFT) /
(tokens - 1)) and the gaps between streamed chunks (ITL); per run: requests/s and output
tokens/s. Imported by `serve_throughput.py` and `serve_matrix.py`; prints nothing itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field

from rainier.api.upstream import UpstreamError, UpstreamPool


@dataclass(frozen=True)
class Req:
    prompt: list[int]
    output_len: int


@dataclass
class Result:
    ok: bool = False
    ttft: float = 0.0
    latency: float = 0.0
    output_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    error: str = ""


def dataset(n: int, seed: int, vocab: int, args: argparse.Namespace) -> list[Req]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        plen = int(rng.lognormvariate(math.log(args.prompt_median), 0.6))
        olen = int(rng.expovariate(1.0 / args.output_mean))
        plen = min(max(plen, 8), args.prompt_max)
        olen = min(max(olen, 4), args.output_max)
        out.append(Req([rng.randrange(3, vocab) for _ in range(plen)], olen))
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# -- the client ---------------------------------------------------------------------------------


async def one(
    pool: UpstreamPool, url: str, model: str, req: Req, headers: dict[str, str]
) -> Result:
    body = {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.output_len,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = Result()
    start = time.perf_counter()
    last = start
    try:
        response = await pool.request(
            "POST",
            url,
            "/v1/completions",
            json.dumps(body).encode(),
            {"content-type": "application/json", **headers},
        )
        try:
            if response.status != 200:
                result.error = f"{response.status}: {(await response.read())[:200]!r}"
                return result
            pending = b""
            async for piece in response.chunks():
                pending += piece
                *events, pending = pending.split(b"\n\n")
                now = time.perf_counter()
                for event in events:
                    if not event.startswith(b"data: {"):
                        continue
                    chunk = json.loads(event[6:])
                    if chunk.get("choices"):
                        if result.ttft == 0.0:
                            result.ttft = now - start
                        else:
                            result.itl.append(now - last)
                        last = now
                    if chunk.get("usage"):
                        result.output_tokens = int(chunk["usage"]["completion_tokens"])
        finally:
            response.release()
    except (UpstreamError, TimeoutError) as exc:
        result.error = repr(exc)
        return result
    result.latency = time.perf_counter() - start
    result.ok = result.output_tokens > 0
    return result


async def drive(
    url: str,
    model: str,
    reqs: list[Req],
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    seed: int = 0,
    headers: dict[str, str] | None = None,
) -> tuple[list[Result], float]:
    """All of `reqs`, at most `concurrency` in flight, or arriving as a Poisson process of
    `rate` a second; (results, wall seconds)."""
    rng = random.Random(seed)
    gate = asyncio.Semaphore(concurrency or len(reqs))
    pool = UpstreamPool(read_timeout_s=600.0)
    try:

        async def run(req: Req, delay: float) -> Result:
            await asyncio.sleep(delay)
            async with gate:
                return await one(pool, url, model, req, headers or {})

        delays, t = [], 0.0
        for _ in reqs:
            delays.append(t)
            if rate:
                t += rng.expovariate(rate)
        start = time.perf_counter()
        results = await asyncio.gather(*(run(r, d) for r, d in zip(reqs, delays, strict=True)))
        return list(results), time.perf_counter() - start
    finally:
        pool.close()


def summary(results: list[Result], wall: float) -> dict[str, float]:
    ok = [r for r in results if r.ok]
    if len(ok) != len(results):
        errors = {r.error for r in results if not r.ok}
        raise SystemExit(f"{len(results) - len(ok)} requests failed: {sorted(errors)[:3]}")
    tokens = sum(r.output_tokens for r in ok)
    ttft = [r.ttft for r in ok]
    tpot = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [gap for r in ok for gap in r.itl]
    return {
        "requests_per_s": round(len(ok) / wall, 2),
        "output_tok_s": round(tokens / wall, 1),
        "ttft_p50_s": round(pct(ttft, 50), 4),
        "ttft_p99_s": round(pct(ttft, 99), 4),
        "tpot_p50_s": round(pct(tpot, 50), 5),
        "tpot_p99_s": round(pct(tpot, 99), 5),
        "itl_p50_s": round(pct(itl, 50), 5),
        "itl_p99_s": round(pct(itl, 99), 5),
        "wall_s": round(wall, 2),
    }
