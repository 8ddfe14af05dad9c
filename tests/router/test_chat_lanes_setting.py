"""`--chat-lanes` / `Server(chat_lanes=)`: how many chat models step side by side."""

from __future__ import annotations

import pytest
from swiftserve.router.router_config import RouterConfig
from swiftserve.router.runtime import RouterRuntime

from swiftserve.cli_parser import build_parser

MODEL = ("a=smollm2-135m-instruct",)


def test_the_lane_count_comes_from_the_settings_and_is_checked() -> None:
    assert RouterConfig.build(MODEL).chat_lanes is None  # the executor's default
    runtime = RouterRuntime(RouterConfig.build(MODEL, chat_lanes=3))
    assert len(runtime.executor.chat) == 3
    with pytest.raises(ValueError, match="chat_lanes must be >= 1"):
        RouterConfig.build(MODEL, chat_lanes=0)


def test_the_launch_flag_takes_a_positive_count() -> None:
    assert build_parser().parse_args(["launch", "--chat-lanes", "1"]).chat_lanes == 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--chat-lanes", "0"])
