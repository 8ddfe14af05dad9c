"""Tier 2: autoscaling end to end on a real local Ray (2 CPUs), with our policy on our signals.

One replica of the default chat model to start (min 1, max 2, a queue-depth target of 2 requests
per replica, delays of seconds instead of Ray's minutes). Eight clients keep requests in flight
until Ray's controller reports a second replica RUNNING; once they stop, it reports one again.
A Ray of its own (the other tier-2 module's replicas would take its CPUs).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'swiftserve[ray]')")
serve = pytest.importorskip("ray.serve")

from swiftserve.router.router_config import RouterConfig  # noqa: E402

from swiftserve.ray.application import ClusterOptions, deploy  # noqa: E402
from swiftserve.ray.autoscale import ScalingTargets  # noqa: E402
from swiftserve.ray.ingress import running_replicas  # noqa: E402
from swiftserve.ray.replica_config import Autoscaling, ReplicaSetConfig  # noqa: E402
from swiftserve.ray.spec import ServeSpec  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHAT = "smollm2-135m-instruct"
APP = "autoscale"
CLIENTS = 8  # 8 in flight on one replica: 4x the target depth, so the policy asks for 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout_s: float, what: str) -> float:
    """Seconds until predicate() held; fails the test past timeout_s."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def autoscaled() -> Iterator[str]:
    port = _free_port()
    router = RouterConfig.from_flags(
        (CHAT,), memory_budget=2 << 30, max_model_len=512, kv_cache_memory=32 << 20, idle_timeout_s=300
    )
    auto = Autoscaling(1, 2, ScalingTargets(target_queue_depth=2), upscale_delay_s=1.0, downscale_delay_s=3.0)
    spec = ServeSpec(router, ReplicaSetConfig(num_cpus=1, autoscaling=auto), app_name=APP)
    try:
        deploy(spec, ClusterOptions(num_cpus=2, object_store_bytes=200 << 20, port=port), wait=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


class _Load:
    """CLIENTS threads, each sending one short chat request after another until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.answered = 0
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        body = {"model": CHAT, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 24}
        with httpx.Client(base_url=self.base, timeout=60) as http:
            while not self.stop.is_set():
                if http.post("/v1/chat/completions", json=body).status_code == 200:
                    self.answered += 1

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def test_replicas_follow_the_queue_depth_up_and_back_down(autoscaled):
    assert running_replicas(APP) == 1
    with _Load(autoscaled) as load:
        up_s = _wait_for(lambda: running_replicas(APP) == 2, 60, "a second replica under load")
    assert load.answered > 0
    down_s = _wait_for(lambda: running_replicas(APP) == 1, 60, "one replica once the load stopped")
    print(f"autoscale: 2 replicas after {up_s:.1f} s of load, 1 again {down_s:.1f} s after it stopped")


def test_a_deployment_at_zero_replicas_stays_there_until_a_request_comes(autoscaled):
    # On the same Ray, after the test above: its application goes, one with min_replicas 0 comes.
    serve.delete(APP)
    router = RouterConfig.from_flags(
        (CHAT,), memory_budget=2 << 30, max_model_len=512, kv_cache_memory=32 << 20, idle_timeout_s=300
    )
    targets = ScalingTargets(target_queue_depth=2)
    auto = Autoscaling(0, 1, targets, upscale_delay_s=0.0, downscale_delay_s=60.0)
    spec = ServeSpec(router, ReplicaSetConfig(num_cpus=1, autoscaling=auto), app_name="zero")
    deploy(spec, ClusterOptions(), wait=True)  # the running Ray and Serve, same port
    time.sleep(5)  # several control-loop ticks with nothing to serve
    assert running_replicas("zero") == 0

    body = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    response = httpx.post(f"{autoscaled}/v1/chat/completions", json=body, timeout=180)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert running_replicas("zero") == 1
