"""Where a pipeline's stages go across replicas: pure functions on names and states (no ray).

A pipeline request enters one replica (the ingress ranks replicas by all of its models: routing.py).
There, each model of the pipeline is either
- resident (or loading) on this replica: its stages run here, with no hop (`elsewhere` leaves it);
- or not: its pre-warm and its stages' calls go through the deployment handle, routed by that one
  model (`route_of`) with the same rule as a request for it (routing.rank): to a replica where it
  is resident, else parked, else to the one with the most free budget. The request router records
  where the pre-warm went (routing.expect_loading), so the stage's call follows it there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from swiftserve.ray.relay import RelayedRequest
from swiftserve.ray.routing import RESIDENT, TIER_OF_STATE, RouteRequest
from swiftserve.ray.stage_wire import PrewarmCall
from swiftserve.router.stage_caller import StageCall


def elsewhere(models: Sequence[str], states_here: Mapping[str, str]) -> frozenset[str]:
    """Those of `models` that are not resident or loading here (model -> state, as reported)."""
    return frozenset(m for m in models if TIER_OF_STATE.get(states_here.get(m, "cold")) != RESIDENT)


def route_of(arg: Any, pipelines: Mapping[str, tuple[str, ...]]) -> RouteRequest:
    """What a call through the handle is routed by: a relayed request by its model (a pipeline by
    all of its models) and session; a stage's call and a pre-warm by their models; else nothing."""
    if isinstance(arg, RelayedRequest) and arg.model is not None:
        return RouteRequest(pipelines.get(arg.model, (arg.model,)), arg.session_id)
    if isinstance(arg, StageCall):
        return RouteRequest((arg.model,))
    if isinstance(arg, PrewarmCall):
        return RouteRequest(arg.models)
    return RouteRequest(())
