"""The `replicas:` section (swiftserve/ray/replica_config.py) and replica groups (groups.py)."""

from __future__ import annotations

import pytest
from swiftserve.router.config_file import ConfigError, parse_config

from swiftserve.ray.groups import group_of_rank, models_for_group
from swiftserve.ray.replica_config import ReplicaGroup, ReplicaSetConfig, parse_replica_config

FILE = """
models:
  - {name: chat, source: smollm2-135m-instruct, policy: pinned}
  - {name: embed, source: all-minilm-l6-v2, policy: pinned}
  - {name: big, source: gemma-3-270m, policy: on-demand}
"""


def _parse(section: str) -> ReplicaSetConfig:
    text = FILE + section
    return parse_replica_config(text, parse_config(text).models, "f.yaml")


def test_defaults_without_a_section():
    assert _parse("") == ReplicaSetConfig()
    assert ReplicaSetConfig().min_replicas == 1


def test_the_core_parser_accepts_the_section_and_ignores_it():
    parsed = parse_config(FILE + "replicas: {num_replicas: 3}\n")
    assert [m.name for m in parsed.models] == ["chat", "embed", "big"]


def test_a_full_section():
    config = _parse(
        """
replicas:
  num_replicas: 3
  num_cpus: 0.5
  memory: 2GiB
  max_ongoing_requests: 16
  groups:
    - {name: chatters, num_replicas: 1, pinned: [chat]}
  autoscaling:
    {min_replicas: 2, max_replicas: 5, target_queue_depth: 4, target_ttft: 500ms, downscale_delay: 5s}
"""
    )
    assert config.num_cpus == 0.5 and config.memory_bytes == 2 << 30 and config.max_ongoing_requests == 16
    assert config.groups == (ReplicaGroup("chatters", 1, ("chat",)),)
    assert config.autoscaling is not None and config.autoscaling.targets.target_ttft_s == 0.5
    assert (config.autoscaling.upscale_delay_s, config.autoscaling.downscale_delay_s) == (30.0, 5.0)
    assert config.min_replicas == 2


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("replicas: {num_replicas: 0}", "f.yaml: replicas.num_replicas: must be >= 1"),
        ("replicas: {replica_count: 2}", "unknown field `replica_count` - at `replicas`"),
        ("replicas: {num_cpus: many}", "Expected `float`, got `str` - at `replicas.num_cpus`"),
        ("replicas: {memory: lots}", "replicas.memory:"),
        (
            "replicas: {groups: [{name: g, pinned: [nope]}]}",
            "replicas.groups[0].pinned: 'nope' is not a served",
        ),
        (
            "replicas: {groups: [{name: g, pinned: [big]}]}",
            "replicas.groups[0].pinned: 'big' is an on-demand",
        ),
        ("replicas: {groups: [{name: g, num_replicas: 2}]}", "replicas.groups: 2 replicas in groups"),
        ("replicas: {num_replicas: 2, groups: [{name: g}, {name: g}]}", "replicas.groups: ['g'] named twice"),
        ("replicas: {autoscaling: {max_replicas: 0}}", "replicas.autoscaling.max_replicas: must be >="),
        ("replicas: {autoscaling: {max_replicas: 2, target_ttft: soon}}", "replicas.autoscaling.target_ttft"),
        (
            "replicas: {autoscaling: {max_replicas: 2, target_queue_depth: 0}}",
            "target_queue_depth: must be > 0",
        ),
    ],
)
def test_errors_name_the_key(section, message):
    with pytest.raises(ConfigError) as error:
        _parse(section + "\n")
    assert message in str(error.value)


def test_ranks_fill_the_groups_in_order():
    groups = (ReplicaGroup("a", 2, ()), ReplicaGroup("b", 1, ()))
    assert [group_of_rank(r, groups) for r in range(5)] == ["a", "a", "b", None, None]
    assert group_of_rank(0, ()) is None


def test_a_group_pins_its_models_the_other_replicas_serve_them_on_demand():
    models = parse_config(FILE).models
    groups = (ReplicaGroup("chatters", 1, ("chat",)),)
    mine = models_for_group(models, groups, "chatters", 30.0)
    other = models_for_group(models, groups, None, 30.0)
    assert [(m.name, m.policy) for m in mine] == [
        ("chat", "pinned"),
        ("embed", "pinned"),
        ("big", "on-demand"),
    ]
    assert [(m.name, m.policy, m.idle_timeout_s) for m in other][:2] == [
        ("chat", "on-demand", 30.0),
        ("embed", "pinned", None),
    ]
