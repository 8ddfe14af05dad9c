"""Replica groups: which group a replica belongs to, and so which models it pins.

A replica's group comes from its rank in the deployment (Ray Serve numbers replicas 0..n-1 and
gives a replacement the rank of the replica it replaces): the first `groups[0].num_replicas`
ranks are the first group, the next ones the second, and ranks past every group are in none.
A model that a group pins is pinned on that group's replicas and on-demand everywhere else (still
served there, loaded on request, scaled to zero when idle), so the routing rule (routing.py)
finds it resident on its group and sends its requests there. A pinned model that no group names
is pinned on every replica.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from swiftserve.ray.replica_config import ReplicaGroup
from swiftserve.router.config_file import ModelConfig


def group_of_rank(rank: int, groups: Sequence[ReplicaGroup]) -> str | None:
    end = 0
    for group in groups:
        end += group.num_replicas
        if rank < end:
            return group.name
    return None


def models_for_group(
    models: Sequence[ModelConfig], groups: Sequence[ReplicaGroup], group: str | None, idle_timeout_s: float
) -> tuple[ModelConfig, ...]:
    """`models` as a replica of `group` serves them: pinned models of other groups on-demand,
    scaled to zero after `idle_timeout_s` (the file's default)."""
    placed = {name: g.name for g in groups for name in g.pinned}
    return tuple(
        dataclasses.replace(m, policy="on-demand", idle_timeout_s=idle_timeout_s)
        if m.name in placed and placed[m.name] != group
        else m
        for m in models
    )
