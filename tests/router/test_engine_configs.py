"""The one path from flags / config file to EngineConfig: precedence, specs."""

import pytest
from swiftserve.router.config_file import ConfigError, ModelConfig, parse_config
from swiftserve.router.engine_configs import ServeDefaults, engine_config, models_from_flags
from swiftserve.router.router_config import RouterConfig


def test_a_models_own_settings_win_over_the_flags():
    defaults = ServeDefaults(
        dtype="float32", max_num_seqs=8, max_num_batched_tokens=512, max_model_len=512, max_queue=3, seed=7
    )
    own = ModelConfig(
        "m", "src", dtype="bfloat16", max_model_len=256, max_num_seqs=2, max_num_batched_tokens=16
    )
    config = engine_config(own, "chat", defaults)
    assert (config.model, config.dtype, config.max_model_len, config.seed) == ("src", "bfloat16", 256, 7)
    assert (config.scheduler.max_num_seqs, config.scheduler.max_num_waiting) == (2, 3)
    assert config.scheduler.max_num_batched_tokens == 16
    assert engine_config(ModelConfig("m", "src"), "chat", defaults).scheduler.max_num_batched_tokens == 512
    queued = engine_config(ModelConfig("m", "src", max_queue=0), "chat", defaults)
    assert queued.scheduler.max_num_waiting == 0  # a model's max_queue wins over --max-queue
    plain = engine_config(ModelConfig("m", "src"), "embedding", ServeDefaults())
    # "auto" stays auto: the loader decides it with the source in hand (a snapshot's own dtype).
    assert (plain.dtype, plain.max_model_len, plain.kv_cache_memory) == ("auto", None, None)


def test_flags_become_pinned_and_on_demand_models(tmp_path):
    models = models_from_flags(("smollm2-135m-instruct",), ("e=all-minilm-l6-v2",), idle_timeout_s=30.0)
    assert [(m.name, m.source, m.policy, m.idle_timeout_s) for m in models] == [
        ("smollm2-135m-instruct", "smollm2-135m-instruct", "pinned", None),
        ("e", "all-minilm-l6-v2", "on-demand", 30.0),
    ]
    with pytest.raises(ConfigError, match="served twice"):
        models_from_flags(("smollm2-135m-instruct",), ("smollm2-135m-instruct",))
    with pytest.raises(ConfigError, match="at least one model"):
        models_from_flags((), ())


def test_automatic_snapshots_go_to_the_model_cache_for_both_kinds(monkeypatch, tmp_path):
    defaults = ServeDefaults(snapshot_cache="/cache")
    assert engine_config(ModelConfig("c", "src"), "chat", defaults).snapshot_cache == "/cache"
    assert engine_config(ModelConfig("e", "src"), "embedding", defaults).snapshot_cache == "/cache"
    monkeypatch.setenv("SWIFTSERVE_CACHE", str(tmp_path))
    assert RouterConfig.from_flags(("smollm2-135m-instruct",)).defaults.snapshot_cache == str(tmp_path)
    assert (
        RouterConfig.from_flags(("smollm2-135m-instruct",), snapshots=False).defaults.snapshot_cache is None
    )


def test_a_router_config_is_plain_and_reports_changed_file_settings(tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text("memory_budget: 1GiB\nidle_timeout: 30s\nmodels:\n  - source: all-minilm-l6-v2\n")
    config = RouterConfig.from_file(path, dtype="float32")
    assert (config.config_file, config.defaults.dtype, config.budget_bytes()) == (str(path), "float32", 2**30)
    same = parse_config(path.read_text())
    assert config.settings_changed_in(same) == ()
    changed = parse_config("memory_budget: 2GiB\nhost_memory: 1GiB\nmodels:\n  - source: all-minilm-l6-v2\n")
    assert config.settings_changed_in(changed) == ("memory_budget", "host_memory", "idle_timeout")
    flagged = RouterConfig.from_file(path, memory_budget=10**9)  # a flag wins: the file's change moot
    assert flagged.settings_changed_in(changed) == ("host_memory", "idle_timeout")
    with pytest.raises(ConfigError, match="dtype"):
        ServeDefaults(dtype="int3")
