"""The ingress deployment: IngressApp (ingress_app.py) on Ray Serve's HTTP proxy (imports ray).

Its requests reach the replicas through a deployment handle, whose request router is ours
(request_router.py). Whether a replica is ready is asked of Ray's controller once a second
(serve.status(): replicas RUNNING, i.e. whose models loaded), so that the ingress answers 503 with
Retry-After instead of queueing requests while none is. A scrape of /metrics asks every replica
at once (broadcast_each) and merges their answers (metrics_merge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import ReplicaState

from swiftserve.ray.ingress_app import UNARY_METHOD, IngressApp
from swiftserve.ray.metrics_merge import merge_metrics
from swiftserve.ray.relay import Part, RelayedRequest
from swiftserve.ray.spec import POW2_MULTIPLEX, ServeSpec

logger = logging.getLogger("swiftserve.ray")

REPLICA_DEPLOYMENT = "SwiftServeReplica"
INGRESS_DEPLOYMENT = "SwiftServeIngress"
READINESS_PERIOD_S = 1.0
# A scrape waits this long for each replica; one slower is left out (and counted) rather than
# holding the whole scrape past Prometheus's own timeout (10 s by default).
METRICS_TIMEOUT_S = 2.0


def is_replica_failure(exc: BaseException) -> bool:
    """Ray's ways of saying that the replica holding a request is gone."""
    lost = (
        ray.exceptions.RayActorError,
        ray.exceptions.ActorUnavailableError,
        serve.exceptions.ReplicaUnavailableError,
        serve.exceptions.DeploymentUnavailableError,
    )
    return isinstance(exc, lost)


@serve.ingress()
class SwiftServeIngress:
    # Ray Serve awaits an async constructor; mypy knows only the synchronous kind.
    async def __init__(self, replicas: DeploymentHandle, spec: ServeSpec) -> None:  # type: ignore[misc]
        self._replicas = replicas
        # Made once: .options() copies the handle's options on every call.
        self._streaming = replicas.options(stream=True)
        self._unary_calls = replicas.options(stream=False)
        self._app_name = spec.app_name
        self._num_ready = 0
        self._multiplexed = spec.request_router == POW2_MULTIPLEX
        # With min_replicas 0, Ray starts a replica for a request that waits at the handle: no 503.
        auto = spec.replicas.autoscaling
        self._scales_from_zero = auto is not None and auto.min_replicas == 0
        is_ready = lambda: self._num_ready > 0 or self._scales_from_zero  # noqa: E731
        self._app = IngressApp(
            self._send, is_ready, is_replica_failure, spec.max_body_bytes, metrics=self._metrics
        )
        self._watcher = asyncio.get_running_loop().create_task(self._watch_readiness())

    def __serve_build_asgi_app__(self) -> IngressApp:
        return self._app

    async def _send(self, method: str, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        parts = self._unary(request) if method == UNARY_METHOD else self._stream(method, request)
        async with contextlib.aclosing(parts) as opened:
            async for part in opened:
                yield part

    def _handle(self, request: RelayedRequest, stream: bool) -> DeploymentHandle:
        handle = self._streaming if stream else self._unary_calls
        if self._multiplexed:
            handle = handle.options(multiplexed_model_id=request.model or "")
        return handle

    async def _stream(self, method: str, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        response = getattr(self._handle(request, stream=True), method).remote(request)
        try:
            async for part in response:
                yield part
        finally:
            response.cancel()  # the client left, or the answer is over (then a no-op)

    async def _unary(self, request: RelayedRequest) -> AsyncGenerator[Part, None]:
        response = self._handle(request, stream=False).answer.remote(request)
        try:
            parts: list[Part] = await response
        finally:
            response.cancel()  # the client left while the replica answered (else a no-op)
        for part in parts:
            yield part

    async def _metrics(self) -> bytes:
        answers, missing = await broadcast_each(self._replicas, "metrics", METRICS_TIMEOUT_S)
        return merge_metrics({a.replica: a.text for a in answers}, missing)

    async def _watch_readiness(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the controller restarting: keep the last answer
                self._num_ready = await asyncio.to_thread(running_replicas, self._app_name)
            await asyncio.sleep(READINESS_PERIOD_S)


async def broadcast_each(handle: DeploymentHandle, method: str, timeout_s: float) -> tuple[list[Any], int]:
    """`method` called on every running replica (Ray's DeploymentHandle.broadcast): the answers of
    those that answered within timeout_s, and how many did not. Each replica is awaited on its
    own: results_async's timeout covers the whole set, so one hung replica would hide them all."""
    response = handle.broadcast(method)
    results = await asyncio.wait_for(response._fetch_replica_results_async(), timeout_s)
    waits = (asyncio.wait_for(result.get_async(), timeout_s) for result in results)
    done = await asyncio.gather(*waits, return_exceptions=True)
    answers = [d for d in done if not isinstance(d, BaseException)]
    for failure in (d for d in done if isinstance(d, BaseException)):
        logger.warning("a replica left out of the metrics scrape: %r", failure)
    return answers, len(done) - len(answers)


def running_replicas(app_name: str) -> int:
    """Replicas of the application that Ray's controller says are RUNNING (their models loaded)."""
    app = serve.status().applications.get(app_name)
    deployment = app.deployments.get(REPLICA_DEPLOYMENT) if app is not None else None
    return 0 if deployment is None else int(deployment.replica_states.get(ReplicaState.RUNNING, 0))
