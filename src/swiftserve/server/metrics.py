"""Prometheus metrics of one server app, in a registry of its own (never the global one).

Counters and histograms are updated by the request handlers; the engine gauges (running and
waiting requests, KV cache usage) are read from each engine's `stats()` when /metrics is scraped.
Every label comes from a bounded set: served model names ("" for a request that names none of
them) and route templates ("unmatched" for any other path), never what a client typed, so no
request, refused or not, can add a series.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from swiftserve.router.pipeline_types import PipelineOutcome
from swiftserve.router.request_types import GenerationStep

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)


class _EngineStatsCollector:
    """Reads every engine's stats at scrape time (no background polling)."""

    def __init__(self, engines: Callable[[], Iterable[tuple[str, object]]]) -> None:
        self._engines = engines

    def collect(self):
        running = GaugeMetricFamily(
            "swiftserve_num_requests_running", "Requests in the running batch", labels=["model"]
        )
        waiting = GaugeMetricFamily(
            "swiftserve_num_requests_waiting", "Requests waiting in the queue", labels=["model"]
        )
        kv_usage = GaugeMetricFamily(
            "swiftserve_kv_cache_usage_ratio", "Fraction of KV blocks in use (0..1)", labels=["model"]
        )
        free_blocks = GaugeMetricFamily(
            "swiftserve_kv_cache_free_blocks", "Free KV cache blocks", labels=["model"]
        )
        total_blocks = GaugeMetricFamily(
            "swiftserve_kv_cache_total_blocks", "All KV cache blocks", labels=["model"]
        )
        preemptions = GaugeMetricFamily("swiftserve_num_preemptions", "Preemptions so far", labels=["model"])
        for name, engine in self._engines():
            stats_fn = getattr(engine, "stats", None)
            stats = stats_fn() if stats_fn is not None else None
            if stats is None:  # a cold model: it holds nothing
                continue
            running.add_metric([name], stats.num_running)
            waiting.add_metric([name], stats.num_waiting)
            kv_usage.add_metric([name], stats.kv_cache_usage)
            free_blocks.add_metric([name], stats.num_free_blocks)
            total_blocks.add_metric([name], stats.num_total_blocks)
            preemptions.add_metric([name], getattr(stats, "num_preemptions", 0))
        yield from (running, waiting, kv_usage, free_blocks, total_blocks, preemptions)
        yield from _grammar_metrics(self._engines())


def _grammar_metrics(engines: Iterable[tuple[str, object]]) -> tuple:
    """Structured outputs per model: compiles, cache hits, refusals, masked rows, mask fill time."""
    counters = {
        "num_compiles": CounterMetricFamily(
            "swiftserve_grammar_compiles", "Grammars compiled", labels=["model"]
        ),
        "num_cache_hits": CounterMetricFamily(
            "swiftserve_grammar_cache_hits", "Constraints found compiled in the cache", labels=["model"]
        ),
        "num_failures": CounterMetricFamily(
            "swiftserve_grammar_failures",
            "Constraints refused (invalid, unsupported, timed out)",
            labels=["model"],
        ),
        "compile_s_total": CounterMetricFamily(
            "swiftserve_grammar_compile_seconds", "Time spent compiling grammars", labels=["model"]
        ),
        "num_constrained_rows": CounterMetricFamily(
            "swiftserve_grammar_constrained_rows", "Rows whose logits a grammar masked", labels=["model"]
        ),
    }
    fill = GaugeMetricFamily(
        "swiftserve_grammar_mask_fill_seconds",
        "One step's mask fill for its constrained rows, over recent steps",
        labels=["model", "quantile"],
    )
    for name, engine in engines:
        stats_fn = getattr(engine, "stats", None)
        grammar = getattr(stats_fn(), "grammar", None) if stats_fn is not None else None
        if grammar is None:
            continue
        for field, family in counters.items():
            family.add_metric([name], getattr(grammar, field))
        fill.add_metric([name, "0.5"], grammar.mask_fill_p50_s)
        fill.add_metric([name, "0.99"], grammar.mask_fill_p99_s)
    return (*counters.values(), fill)


_STATES = ("cold", "loading", "resident", "unloading", "parked")


class _ModelLifecycleCollector:
    """Each model's state, resident bytes, loads and unloads, and its host tier: parked bytes,
    parks, drops to disk and loads by the tier they read the weights from (ModelInfo)."""

    def __init__(self, infos: Callable[[], Iterable]) -> None:
        self._infos = infos

    def collect(self):
        state = GaugeMetricFamily(
            "swiftserve_model_state", "1 for the state the model is in", labels=["model", "state"]
        )
        resident = GaugeMetricFamily(
            "swiftserve_model_resident_bytes", "Weights plus KV cache held", labels=["model"]
        )
        loads = CounterMetricFamily("swiftserve_model_loads", "Completed loads", labels=["model"])
        unloads = CounterMetricFamily("swiftserve_model_unloads", "Completed unloads", labels=["model"])
        infos = list(self._infos())
        for info in infos:
            for name in _STATES:
                state.add_metric([info.name, name], 1.0 if info.state == name else 0.0)
            resident.add_metric([info.name], info.resident_bytes)
            loads.add_metric([info.name], info.num_loads)
            unloads.add_metric([info.name], info.num_unloads)
        yield from (state, resident, loads, unloads)
        yield from _host_tier_metrics(infos)


def _host_tier_metrics(infos: list) -> tuple:
    parked = GaugeMetricFamily(
        "swiftserve_model_parked_bytes", "Weights held in host memory (parked)", labels=["model"]
    )
    parks = CounterMetricFamily("swiftserve_model_parks", "Unloads to host memory", labels=["model"])
    drops = CounterMetricFamily(
        "swiftserve_model_drops_to_disk", "Parked weights dropped to disk", labels=["model"]
    )
    by_tier = CounterMetricFamily(
        "swiftserve_model_loads_by_tier",
        "Completed loads by where the weights came from",
        labels=["model", "tier"],
    )
    for info in infos:
        parked.add_metric([info.name], info.parked_bytes)
        parks.add_metric([info.name], info.num_parks)
        drops.add_metric([info.name], info.num_drops)
        for tier, count in info.loads_by_tier:
            by_tier.add_metric([info.name, tier], count)
    return parked, parks, drops, by_tier


class ServerMetrics:
    def __init__(
        self,
        engines: Callable[[], Iterable[tuple[str, object]]] = lambda: (),
        models: Callable[[], Iterable] = lambda: (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "swiftserve_requests", "Finished HTTP requests", ["model", "endpoint", "status"], registry=r
        )
        self.ttft = Histogram(
            "swiftserve_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "swiftserve_inter_token_latency_seconds",
            "Time between output tokens",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "swiftserve_e2e_request_latency_seconds",
            "Request latency",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "swiftserve_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "swiftserve_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.cold_start = Histogram(
            "swiftserve_cold_start_seconds",
            "Arrival to first token (or embedding) of requests that found their model cold",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_full = Counter(
            "swiftserve_queue_full",
            "Requests refused (429) because the model's queue was full, from any caller",
            ["model"],
            registry=r,
        )
        self.timeouts = Counter(
            "swiftserve_request_timeouts", "Requests to a model that ran past their timeout", ["model"],
            registry=r,
        )  # fmt: skip
        self.follower_prewarms = Counter(
            "swiftserve_follower_prewarms",
            "Loads started because the model often follows `after` in a session (learned followers)",
            ["model", "after"],
            registry=r,
        )
        self.pipeline = _PipelineMetrics(r, self.prompt_tokens, self.generation_tokens)
        r.register(_EngineStatsCollector(engines))
        r.register(_ModelLifecycleCollector(models))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PipelineMetrics:
    """Per pipeline and stage; labels come from the config (pipeline, stage and model names).
    A stage's tokens also count in its model's prompt and generation token counters: those say
    what each model processed, whichever route its requests came by."""

    def __init__(self, r: CollectorRegistry, prompt_tokens: Counter, generation_tokens: Counter) -> None:
        self.prompt_tokens, self.generation_tokens = prompt_tokens, generation_tokens
        self.requests = Counter(
            "swiftserve_pipeline_requests",
            "Pipeline requests by outcome",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "swiftserve_pipeline_latency_seconds", "Pipeline request latency", ["pipeline"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_latency = Histogram(
            "swiftserve_stage_latency_seconds", "A stage's time from its inputs ready to its end",
            ["pipeline", "stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cold_wait = Histogram(
            "swiftserve_stage_cold_wait_seconds", "A stage's wait for its model to be resident",
            ["pipeline", "stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prewarm_loads = Counter(
            "swiftserve_prewarm_loads", "Model loads started by a pipeline's pre-warm", ["pipeline", "model"],
            registry=r,
        )  # fmt: skip
        self.prewarm_saved = Counter(
            "swiftserve_prewarm_saved_seconds", "Loads a request caused minus the cold waits it saw",
            ["pipeline"], registry=r,
        )  # fmt: skip

    def observe(self, name: str, outcome: PipelineOutcome) -> None:
        """One pipeline request's end: ok, error, queue_full (refused at arrival) or timeout."""
        self.requests.labels(name, outcome.kind).inc()
        result = outcome.result
        if result is None:
            return
        self.latency.labels(name).observe(result.latency_s)
        for stage in result.stages:
            t = stage.timing
            self.stage_latency.labels(name, stage.id).observe(t.end_s - t.start_s)
            self.cold_wait.labels(name, stage.id).observe(t.cold_wait_s)
            if t.load_started_by == "prewarm":
                self.prewarm_loads.labels(name, stage.model).inc()
            self.prompt_tokens.labels(stage.model).inc(stage.usage.prompt_tokens)
            self.generation_tokens.labels(stage.model).inc(stage.usage.completion_tokens)
        self.prewarm_saved.labels(name).inc(result.prewarm_saved_s)


class RequestTimer:
    """Per-request latency bookkeeping: TTFT, inter-token gaps and end-to-end time."""

    __slots__ = ("metrics", "model", "start", "last", "num_tokens")

    def __init__(self, metrics: ServerMetrics, model: str, start: float) -> None:
        self.metrics = metrics
        self.model = model
        self.start = start
        self.last: float | None = None
        self.num_tokens = 0

    def on_tokens(self, now: float, num_new_tokens: int) -> None:
        """Called after each engine step that produced `num_new_tokens` (summed over choices)."""
        if num_new_tokens <= 0:
            return
        if self.last is None:
            self.metrics.ttft.labels(self.model).observe(now - self.start)
        else:
            gap = (now - self.last) / num_new_tokens
            hist = self.metrics.inter_token.labels(self.model)
            for _ in range(num_new_tokens):
                hist.observe(gap)
        self.last = now
        self.num_tokens += num_new_tokens

    def on_finish(self, now: float, num_prompt_tokens: int) -> None:
        self.metrics.e2e.labels(self.model).observe(now - self.start)
        self.metrics.prompt_tokens.labels(self.model).inc(num_prompt_tokens)
        self.metrics.generation_tokens.labels(self.model).inc(self.num_tokens)


async def timed(
    steps: AsyncGenerator[GenerationStep, None], timer: RequestTimer
) -> AsyncGenerator[GenerationStep, None]:
    """The router's GenerationSteps, each counted by `timer` as it arrives; the end (or an early
    close) records the request's latency and token counts. Closing it closes `steps`."""
    num_prompt_tokens = 0
    try:
        async with contextlib.aclosing(steps):
            async for step in steps:
                timer.on_tokens(time.perf_counter(), step.num_new_tokens)
                num_prompt_tokens = step.usage.prompt_tokens
                yield step
    finally:
        timer.on_finish(time.perf_counter(), num_prompt_tokens)
