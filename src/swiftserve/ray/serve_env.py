"""Ray Serve's process switches that a local Ray is started with (imports nothing of ray).

Ray Serve reads them once, in each of its processes, at start: so they go into the environment
before ray.init starts the local Ray (whose processes inherit it), and a cluster started with
`ray start` needs them in the environment of that command. Measured on this 2-vCPU host
(benchmarks/ray_serve.py --same-loop-ab): GET /v1/models through Ray 40 -> 26 ms p50, one
handle call to a replica 10.5 -> 7.5 ms p50.
"""

from __future__ import annotations

import os

# User code on the replica's own event loop and a handle's router on its caller's, instead of
# each on a thread of its own: two thread hand-offs fewer per call on each side (our replica and
# ingress never block their loop: engines step on the device executor's threads). And no access
# log line to stderr per request (Ray's log files keep it).
SAME_LOOP_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
# Ray Serve's defaults for the same switches (for an A/B against them).
RAY_DEFAULT_ENV = dict.fromkeys(SAME_LOOP_ENV, "1")


def apply_serve_env() -> None:
    """SAME_LOOP_ENV into this process's environment, unless the user set a switch already."""
    for key, value in SAME_LOOP_ENV.items():
        os.environ.setdefault(key, value)
