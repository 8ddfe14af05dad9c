"""Stage calls from a replica to the replicas of its own deployment (imports ray).

The handle is made on first use (a replica's constructor runs before Serve knows the replica),
and its request router is ours (request_router.py), so each call goes where stage_plan.route_of
and routing.rank say.

Each call gets a request id of its own. Ray Serve gives a call made while serving a request the
id of that request, and its request router indexes the requests waiting for a replica by that
id: a pipeline's pre-warm and its stage's call, in flight together, would share one entry, and
the router hands the replica it picked for one to the other, leaving the second unrouted
forever (seen: a pipeline request hung with its router spinning in choose_replicas).
"""

from __future__ import annotations

import contextvars
import dataclasses
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import ray.serve.context
from ray import serve
from ray.serve.handle import DeploymentHandle

from swiftserve.ray.ingress import REPLICA_DEPLOYMENT


class HandleSender:
    """stage_caller.ReplicaSender over a deployment handle of the application `app_name`."""

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self._handle: DeploymentHandle | None = None

    def _replicas(self) -> DeploymentHandle:
        if self._handle is None:
            self._handle = serve.get_deployment_handle(REPLICA_DEPLOYMENT, self.app_name)
        return self._handle

    async def call(self, method: str, arg: Any) -> Any:
        return await _remote(self._replicas(), method, arg)

    async def stream(self, method: str, arg: Any) -> AsyncGenerator[Any, None]:
        response = _remote(self._replicas().options(stream=True), method, arg)
        try:
            async for part in response:
                yield part
        finally:
            response.cancel()  # the stage was cancelled, or its answer is over (then a no-op)


def _remote(handle: DeploymentHandle, method: str, arg: Any) -> Any:
    """handle.method.remote(arg) under a request id of its own (see the module docstring)."""
    return contextvars.copy_context().run(_remote_with_own_id, handle, method, arg)


def _remote_with_own_id(handle: DeploymentHandle, method: str, arg: Any) -> Any:
    # Ray reads the id from this context variable when the call is made (no public API sets it).
    context = ray.serve.context._get_serve_request_context()
    own = dataclasses.replace(context, _internal_request_id=uuid.uuid4().hex)
    ray.serve.context._serve_request_context.set(own)  # type: ignore[arg-type] # declared ContextVar[None]
    return getattr(handle, method).remote(arg)
