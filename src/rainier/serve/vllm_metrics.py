"""The replica's metrics again under vLLM's names, so dashboards made for vLLM work as they are.

Nothing is measured twice: at each scrape the collector reads rainier's own metrics and
re-exports their samples renamed (`rainier_serve_requests_running` as
`vllm:num_requests_running`, ...) with the `model_name` label vLLM's dashboards filter on.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from rainier.serve.metrics import ServeMetrics

# rainier's family -> vLLM's families (one of ours may stand for two of theirs: vLLM renamed
# the per-token latency between its engines, and dashboards use either name).
NAMES: dict[str, tuple[str, ...]] = {
    "rainier_serve_requests_running": ("vllm:num_requests_running",),
    "rainier_serve_requests_waiting": ("vllm:num_requests_waiting",),
    "rainier_serve_time_to_first_token_seconds": ("vllm:time_to_first_token_seconds",),
    "rainier_serve_inter_token_latency_seconds": (
        "vllm:time_per_output_token_seconds",
        "vllm:inter_token_latency_seconds",
    ),
    "rainier_serve_prompt_tokens": ("vllm:prompt_tokens",),
    "rainier_serve_generation_tokens": ("vllm:generation_tokens",),
    "rainier_serve_requests_finished": ("vllm:request_success",),
    "rainier_serve_preemptions": ("vllm:num_preemptions",),
}
LABELS = {"finish_reason": "finished_reason"}


class VllmCollector:
    """Registered in a registry of its own (see `render`), never in the source's: it reads
    the source's metrics while collecting."""

    def __init__(self, source: ServeMetrics, model_name: str) -> None:
        self.source = source
        self.model_name = model_name

    def _metrics(self) -> Iterator[MetricWrapperBase]:
        for value in vars(self.source).values():
            if isinstance(value, MetricWrapperBase):
                yield value

    def collect(self) -> Iterator[Metric]:
        for wrapper in self._metrics():
            for family in wrapper.collect():
                for name in NAMES.get(family.name, ()):
                    yield self._renamed(family, name)
        used = self.source.kv_blocks_used._value.get()
        total = self.source.kv_blocks_total._value.get()
        for name in ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"):
            usage = GaugeMetricFamily(
                name, "KV cache blocks in use, a fraction of the pool", labels=["model_name"]
            )
            usage.add_metric([self.model_name], used / total if total else 0.0)
            yield usage

    def _renamed(self, family: Metric, name: str) -> Metric:
        out = Metric(name, family.documentation, family.type)
        for s in family.samples:
            labels = {LABELS.get(k, k): v for k, v in s.labels.items()}
            labels["model_name"] = self.model_name
            suffix = s.name[len(family.name) :]
            out.samples.append(Sample(name + suffix, labels, s.value, s.timestamp, s.exemplar))
        return out


def vllm_registry(source: ServeMetrics, model_name: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VllmCollector(source, model_name))
    return registry


def render(source: ServeMetrics, registry: CollectorRegistry) -> bytes:
    """rainier's own metrics followed by their vLLM twins, in one exposition."""
    return source.render() + generate_latest(registry)
