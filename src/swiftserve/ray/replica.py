"""One replica: a whole multi-model swiftserve (the router and OpenAI app of `swiftserve launch`).

The method names follow Ray Serve LLM's server contract: `chat`, `completions` and `embeddings`
are async generators (a streamed answer's parts, relay.py; `answer` returns every part of any
other request at once), `check_health` raises when the replica cannot
serve, and `get_deployment_options` gives Ray its options (deployment_options.py). Beside them:
- `record_routing_stats`: what the request router ranks replicas by (routing.ReplicaReport):
  every model's state, the requests in flight, the free memory budget, the replica's group.
  Ray calls it every ROUTING_STATS_PERIOD_S and hands the result to every router.
- `metrics`: this replica's Prometheus text, which the ingress merges with the others'
  (metrics_merge.py) to answer GET /metrics for the whole deployment.
- `record_autoscaling_stats`: requests in flight and recent mean time to first token
  (autoscaling_policy.py).
- `prewarm(call)`, `stage(call)`, `stage_embed(call)`: what another replica's pipeline asks of
  this one (stage_wire.py): start loading its models now, run one of its stages here. On Ray, this
  replica's own pipelines send their stages whose models are not resident here to the replicas
  where they are (stage_caller.RayStages).
A replica's group (and so which models it pins) follows from its rank (groups.py).
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.ray.autoscale import window_mean
from swiftserve.ray.autoscaling_policy import QUEUE_DEPTH, TTFT
from swiftserve.ray.deployment_options import deployment_options
from swiftserve.ray.groups import group_of_rank
from swiftserve.ray.metrics_merge import ReplicaMetrics
from swiftserve.ray.relay import Part, RelayedRequest, collect, run_in_app
from swiftserve.ray.spec import MULTIPLEX_MODELS_PER_REPLICA, POW2_MULTIPLEX, ServeSpec
from swiftserve.ray.stage_caller import RayStages
from swiftserve.ray.stage_wire import (
    PrewarmCall,
    StageFailure,
    StagePart,
    prewarm_models,
    serve_embed,
    serve_stage,
)
from swiftserve.router.runtime import RouterRuntime
from swiftserve.router.stage_caller import StageCall
from swiftserve.server.app import App

logger = logging.getLogger("swiftserve.ray")


class SwiftServeReplica:
    """See the module docstring. rank: given by tier-1 tests; on Ray, the replica's own (and
    its pipelines' stages may run on the other replicas)."""

    # Ray Serve awaits an async constructor (models load before the replica counts as running).
    async def __init__(self, spec: ServeSpec, rank: int | None = None) -> None:  # type: ignore[misc]
        self.group = group_of_rank(_replica_rank() if rank is None else rank, spec.replicas.groups)
        self.replica_id = _replica_id() if rank is None else f"rank-{rank}"
        self.runtime = RouterRuntime(spec.router_for(self.group), self._on_cold_start)
        self.app = App(
            self.runtime.router,
            api_key=spec.api_key,
            max_body_bytes=spec.max_body_bytes,
            fingerprint_info=_fingerprint(spec),
            on_shutdown=self.runtime.executor.stop,
        )
        self.in_flight = 0
        self.num_requests: collections.Counter[str] = collections.Counter()
        self.num_stage_calls: collections.Counter[str] = collections.Counter()  # other replicas' stages
        self.num_prewarms: collections.Counter[str] = collections.Counter()  # models others pre-warmed
        if rank is None and spec.router.pipelines:
            self.runtime.router.remote_stages = _ray_stages(self, spec.app_name)
        self._seq = 0
        self._ttft_seen = (0.0, 0)
        self._multiplex = _multiplexer() if spec.request_router == POW2_MULTIPLEX else None
        try:
            await self.runtime.start()
        except BaseException:
            await self.runtime.stop()
            raise
        self.app.is_ready = True
        logger.info("replica ready (group %s): %s", self.group, self.runtime.router.names())

    @classmethod
    def get_deployment_options(cls, spec: ServeSpec) -> dict[str, Any]:
        return deployment_options(spec)

    def _on_cold_start(self, name: str, seconds: float) -> None:
        self.app.metrics.cold_start.labels(name).observe(seconds)

    # -- requests (the ingress picks the method by path; all answer through the app) ---------------
    async def chat(self, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        async for part in self.relay(request):
            yield part

    async def completions(self, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        async for part in self.relay(request):
            yield part

    async def embeddings(self, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        async for part in self.relay(request):
            yield part

    async def answer(self, request: RelayedRequest) -> list[Part]:
        """Any request not streamed: every part at once (one round trip through Ray, not one per
        part). Cancelled (the client left): the app's request is aborted, as for a stream."""
        return await collect(self.relay(request))

    async def relay(self, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        """Any other route of the app (/v1/models, /v1/pipelines/{name}, /metrics)."""
        self.in_flight += 1
        self.num_requests[request.model or ""] += 1
        if self._multiplex is not None and request.model:
            await self._multiplex(request.model)  # the baseline: Ray counts this replica's models
        try:
            async for part in run_in_app(self.app, request):
                yield part
        finally:
            self.in_flight -= 1

    # -- what another replica's pipeline asks of this one (stage_wire.py) ---------------------------
    async def prewarm(self, call: PrewarmCall) -> list[str]:
        """Starts loading those of the models that are not resident (as a pipeline's pre-warm does
        in one process); returns the ones whose load this started."""
        self.num_prewarms.update(call.models)
        return await prewarm_models(self.runtime.router, call.models)

    async def stage(self, call: StageCall) -> AsyncGenerator[StagePart, None]:
        """A chat or completion stage of a pipeline that runs on another replica."""
        self.num_stage_calls[call.model] += 1
        self.in_flight += 1
        try:
            async with contextlib.aclosing(serve_stage(self.runtime.router, call)) as parts:
                async for part in parts:
                    yield part  # closed early (the stage was cancelled): aborts the request
        finally:
            self.in_flight -= 1

    async def stage_embed(self, call: StageCall) -> EmbeddingResult | StageFailure:
        """An embed or retrieve stage of a pipeline that runs on another replica."""
        self.num_stage_calls[call.model] += 1
        self.in_flight += 1
        try:
            return await serve_embed(self.runtime.router, call)
        finally:
            self.in_flight -= 1

    def metrics(self) -> ReplicaMetrics:
        """This replica's /metrics, for the ingress's merged scrape (metrics_merge.py)."""
        return ReplicaMetrics(self.replica_id, self.app.metrics.render().decode())

    # -- what Ray asks of a replica -----------------------------------------------------------------
    async def check_health(self) -> None:
        if not self.runtime.executor.is_running:
            raise RuntimeError("the device executor stopped: this replica cannot step its models")

    def model_states(self) -> dict[str, str]:
        router = self.runtime.router
        return {name: router.pool.state(name).value for name in router.names()}

    def record_routing_stats(self) -> dict[str, Any]:
        self._seq += 1
        router = self.runtime.router
        return {
            "models": self.model_states(),
            "queue_depth": self.in_flight,
            "free_budget_bytes": router.pool.ledger.free_bytes(),
            "group": self.group,
            "seq": self._seq,
            "num_requests": dict(self.num_requests),
            "num_loads": {info.name: info.num_loads for info in router.models()},
            "num_stage_calls": dict(self.num_stage_calls),
            "num_prewarms": dict(self.num_prewarms),
        }

    async def record_autoscaling_stats(self) -> dict[str, float]:
        now = _histogram_sum_count(self.app.metrics.ttft)
        ttft = window_mean(self._ttft_seen, now)
        self._ttft_seen = now
        return {QUEUE_DEPTH: float(self.in_flight), TTFT: ttft or 0.0}

    async def __del__(self) -> None:
        # Ray Serve awaits this on a graceful shutdown (its documented form of a replica's
        # destructor): streams end with an error event, models unload. The garbage collector's
        # later call only makes a coroutine that is never awaited.
        await self.app.begin_shutdown()


def _ray_stages(replica: SwiftServeReplica, app_name: str) -> RayStages:
    """The stage caller of a replica on Ray: its stages go to the replicas holding their models."""
    from swiftserve.ray.ingress import is_replica_failure
    from swiftserve.ray.stage_handle import HandleSender

    return RayStages(replica.model_states, HandleSender(app_name), is_replica_failure)


def _replica_rank() -> int:
    from ray import serve

    return serve.get_replica_context().rank.rank


def _replica_id() -> str:
    from ray import serve

    return serve.get_replica_context().replica_id.unique_id


def _multiplexer() -> Any:
    """Ray's model multiplexing, as the baseline router sees it: this replica's last
    MULTIPLEX_MODELS_PER_REPLICA models by request (an LRU of names; our pool still decides what
    is resident). A function of its own per replica: Ray keeps its LRU on the function object."""
    from ray import serve

    async def touch(model_id: str) -> str:
        return model_id

    return serve.multiplexed(max_num_models_per_replica=MULTIPLEX_MODELS_PER_REPLICA)(touch)


def _fingerprint(spec: ServeSpec) -> str:
    defaults = spec.router.defaults
    return f"dtype={defaults.dtype} device={defaults.device}"


def _histogram_sum_count(histogram: Any) -> tuple[float, int]:
    """(sum, count) over every label of a prometheus_client Histogram."""
    total, count = 0.0, 0
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += int(sample.value)
    return total, count
