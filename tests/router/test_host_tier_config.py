"""host_memory and unload_to in the config file and RouterConfig: parsed, defaulted, and refused
with errors naming the key."""

import pytest
from swiftserve.router.config_file import ConfigError, parse_config
from swiftserve.router.router_config import RouterConfig

FILE = """
host_memory: 2GiB
models:
  - name: chat
    source: smollm2-135m-instruct
    policy: on-demand
    unload_to: host
  - name: other
    source: smollm2-135m-instruct
    policy: on-demand
    unload_to: disk
  - name: third
    source: smollm2-135m-instruct
    policy: on-demand
"""


def test_host_memory_and_unload_to_are_parsed_with_their_defaults():
    config = parse_config(FILE)
    assert config.host_memory == 2 * 2**30
    assert [m.unload_to for m in config.models] == ["host", "disk", "auto"]
    assert parse_config("models: [{source: smollm2-135m-instruct}]").host_memory == 0  # off by default


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (FILE.replace("unload_to: disk", "unload_to: swap"), r"`models\[1\]\.unload_to`"),
        (FILE.replace("host_memory: 2GiB", "host_memory: lots"), "host_memory: expected a byte count"),
        (FILE.replace("host_memory: 2GiB", "host_memory: -1"), "host_memory: a byte count must be >= 0"),
        (FILE.replace("host_memory: 2GiB", ""), r"models\[0\]\.unload_to: host needs host_memory"),
    ],
)
def test_bad_values_name_the_key(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text)


def test_the_flag_wins_over_the_file(tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text(FILE)
    assert RouterConfig.from_file(path).host_budget_bytes() == 2 * 2**30
    assert RouterConfig.from_file(path, host_memory=0).host_budget_bytes() == 0
    assert RouterConfig.from_flags(("smollm2-135m-instruct",)).host_budget_bytes() == 0
    with pytest.raises(ValueError, match="host_memory must be >= 0"):
        RouterConfig.from_flags(("smollm2-135m-instruct",), host_memory=-1)
