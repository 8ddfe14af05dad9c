"""Tier 1: the Ray Serve switches a local Ray starts with (serve_env.py) never override the user's."""

from __future__ import annotations

import os

import pytest

from swiftserve.ray.serve_env import SAME_LOOP_ENV, apply_serve_env


def test_the_same_loop_switches_are_set_unless_the_user_set_them(monkeypatch: pytest.MonkeyPatch):
    for key in SAME_LOOP_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_SERVE_LOG_TO_STDERR", "1")
    apply_serve_env()

    assert os.environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert os.environ["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"
    assert os.environ["RAY_SERVE_LOG_TO_STDERR"] == "1"
