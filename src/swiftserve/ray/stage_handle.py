"""Stage calls from a replica to the replicas of its own deployment (imports ray).

The handle is made on first use (a replica's constructor runs before Serve knows the replica),
and its request router is ours (request_router.py), so each call goes where stage_plan.route_of
and routing.rank say.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

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
        return await getattr(self._replicas(), method).remote(arg)

    async def stream(self, method: str, arg: Any) -> AsyncGenerator[Any, None]:
        response = getattr(self._replicas().options(stream=True), method).remote(arg)
        try:
            async for part in response:
                yield part
        finally:
            response.cancel()  # the stage was cancelled, or its answer is over (then a no-op)
