"""Prometheus metrics of one replica, in a registry of its own so that several engines (tests,
embedded use) never collide in the process-global default registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rainier.serve.engine import EngineStats

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("rainier_serve_requests_running", "Sequences in the batch", registry=r)
        self.waiting = Gauge("rainier_serve_requests_waiting", "Sequences queued", registry=r)
        self.kv_blocks_used = Gauge(
            "rainier_serve_kv_blocks_used", "KV cache blocks held by sequences", registry=r
        )
        self.kv_blocks_total = Gauge(
            "rainier_serve_kv_blocks_total", "KV cache blocks in the pool", registry=r
        )
        self.ttft = Histogram(
            "rainier_serve_time_to_first_token_seconds",
            "From request arrival to its first generated token",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.itl = Histogram(
            "rainier_serve_inter_token_latency_seconds",
            "Between consecutive tokens of one sequence",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "rainier_serve_e2e_request_latency_seconds",
            "From request arrival to its last token",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "rainier_serve_prompt_tokens", "Prompt tokens admitted", registry=r
        )
        self.generation_tokens = Counter(
            "rainier_serve_generation_tokens", "Tokens generated", registry=r
        )
        self.finished = Counter(
            "rainier_serve_requests_finished",
            "Sequences finished, by reason",
            ["finish_reason"],
            registry=r,
        )
        self.preemptions = Counter(
            "rainier_serve_preemptions", "Sequences preempted for KV space", registry=r
        )
        self._preemptions_seen = 0

    def observe_stats(self, stats: EngineStats) -> None:
        self.running.set(stats.running)
        self.waiting.set(stats.waiting)
        self.kv_blocks_used.set(stats.kv_blocks_used)
        self.kv_blocks_total.set(stats.kv_blocks_total)
        if stats.num_preemptions > self._preemptions_seen:
            self.preemptions.inc(stats.num_preemptions - self._preemptions_seen)
            self._preemptions_seen = stats.num_preemptions

    def render(self) -> bytes:
        return generate_latest(self.registry)
