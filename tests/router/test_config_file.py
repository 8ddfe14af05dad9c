"""The config file: valid files become ModelConfigs; bad keys and values name the key."""

import pytest
from swiftserve.router.config_file import (
    ConfigError,
    ModelConfig,
    load_config_file,
    parse_config,
    parse_duration,
)
from swiftserve.router.followers import FollowerConfig

GOOD = """
memory_budget: 6GiB
idle_timeout: 90s
models:
  - name: chat
    source: smollm2-135m-instruct
    policy: pinned
    max_num_seqs: 64
  - source: all-minilm-l6-v2
    policy: on-demand
    dtype: float32
  - name: big
    source: /models/llama
    policy: on-demand
    idle_timeout: 5m
    priority: 2
    request_priority: -1
    max_queue: 4
    max_num_batched_tokens: 16
"""


def test_a_good_file_becomes_model_configs():
    config = parse_config(GOOD)
    assert config.memory_budget == 6 * 2**30
    assert config.idle_timeout_s == 90.0
    assert config.models == (
        ModelConfig(
            name="chat", source="smollm2-135m-instruct", policy="pinned", idle_timeout_s=None, max_num_seqs=64
        ),
        ModelConfig(
            name="all-minilm-l6-v2",
            source="all-minilm-l6-v2",
            policy="on-demand",
            idle_timeout_s=90.0,
            dtype="float32",
        ),
        ModelConfig(
            name="big",
            source="/models/llama",
            policy="on-demand",
            idle_timeout_s=300.0,
            priority=2,
            request_priority=-1,
            max_queue=4,
            max_num_batched_tokens=16,
        ),
    )


def test_load_config_file_reads_the_file(tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text(GOOD)
    assert [m.name for m in load_config_file(path).models] == ["chat", "all-minilm-l6-v2", "big"]
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("models:\n  - source: a\n    polcy: pinned\n", ["unknown field `polcy`", "`models[0]`"]),
        ("modles: []\n", ["unknown field `modles`"]),
        ("models:\n  - source: a\n    policy: sometimes\n", ["`models[0].policy`"]),
        ("models:\n  - source: a\n    max_num_seqs: many\n", ["`models[0].max_num_seqs`"]),
        ("models:\n  - source: a\n    max_model_len: 0\n", ["models[a].max_model_len"]),
        ("models:\n  - source: a\n    max_num_batched_tokens: 0\n", ["models[a].max_num_batched_tokens"]),
        ("models:\n  - name: x\n", ["missing required field `source`", "`models[0]`"]),
        ("models: []\n", ["models: at least one"]),
        ("models:\n  - source: a\n  - source: a\n", ["served twice under ['a']"]),
        (
            "models:\n  - source: a\n    policy: on-demand\n    idle_timeout: soon\n",
            ["models[0].idle_timeout"],
        ),
        ("models:\n  - source: a\n    idle_timeout: 5s\n", ["models[0].idle_timeout", "pinned"]),
        ("idle_timeout: -3\nmodels:\n  - source: a\n", ["idle_timeout", ">= 0"]),
        ("models:\n  - name: a/b\n    source: a\n", ["models[].name"]),
        ("models:\n  - source: a\n    max_queue: -1\n", ["models[a].max_queue", ">= 0"]),
        ("models:\n  - source: a\n    request_priority: high\n", ["`models[0].request_priority`"]),
        ("followers:\n  window: 0\nmodels:\n  - source: a\n", ["followers.window", "> 0"]),
        ("followers:\n  window: later\nmodels:\n  - source: a\n", ["followers.window"]),
        ("followers:\n  min_share: 2\nmodels:\n  - source: a\n", ["followers.min_share"]),
        ("followers:\n  often: yes\nmodels:\n  - source: a\n", ["unknown field `often`", "`followers`"]),
        ("models: [\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["Expected `object`"]),
    ],
)
def test_bad_files_name_the_key(text, names):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "swiftserve.yaml")
    message = str(info.value)
    assert message.startswith("swiftserve.yaml: ")
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("60s", 60.0), ("5m", 300.0), ("1h", 3600.0), ("12", 12.0), (7, 7.0), (0.5, 0.5)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 minutes", "-1s", "1d", True])
def test_bad_durations(value):
    with pytest.raises(ConfigError):
        parse_duration(value)


PIPELINE = """
models:
  - source: a
pipelines:
  - name: p
    priority: {priority}
    max_queue: {max_queue}
    stages:
      - {{id: s, kind: chat, model: a, messages: [{{role: user, content: "{{{{ input }}}}"}}]}}
"""


def test_a_pipeline_has_a_priority_and_a_max_queue():
    (spec,) = parse_config(PIPELINE.format(priority=-2, max_queue=3)).pipelines
    assert (spec.priority, spec.max_queue) == (-2, 3)
    (spec,) = parse_config(PIPELINE.format(priority=0, max_queue="null")).pipelines
    assert spec.max_queue is None
    with pytest.raises(ConfigError, match=r"pipelines\[p\]: max_queue: at least 1"):
        parse_config(PIPELINE.format(priority=0, max_queue=0))
    with pytest.raises(ConfigError, match=r"`pipelines\[0\].priority`"):
        parse_config(PIPELINE.format(priority="soon", max_queue=1))


def test_the_followers_section():
    assert parse_config("models:\n  - source: a\n").followers is None
    text = "followers:\n  enabled: false\n  window: 2m\n  min_support: 5\nmodels:\n  - source: a\n"
    assert parse_config(text).followers == FollowerConfig(False, 120.0, 5, 0.5)
