"""Tier 2: a real local Ray (2 CPUs, a small object store, loopback only), two replicas with the
default chat and embedding models, the unchanged openai SDK through Ray's HTTP proxy.

The chat model is pinned on replica group "chatters" (rank 0) and on-demand on the other replica,
so it is resident on one replica only; the embedding model is pinned on both, and a second copy of
it (`vec`) on group "vectors" (rank 1) only. Pipeline `ask` embeds with `vec`, then answers with the
chat model: whichever replica it enters, one of its stages runs on the other one. One Ray for the
whole module; every test bounds its requests with timeouts, so a routing bug fails, never hangs.
"""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'swiftserve[ray]')")
serve = pytest.importorskip("ray.serve")

from swiftserve.router.pipeline_spec import Message, PipelineSpec, StageSpec  # noqa: E402
from swiftserve.router.router_config import RouterConfig  # noqa: E402

from swiftserve.ray.application import ClusterOptions, deploy  # noqa: E402
from swiftserve.ray.placement import PlacementError  # noqa: E402
from swiftserve.ray.replica_config import ReplicaGroup, ReplicaSetConfig  # noqa: E402
from swiftserve.ray.spec import ServeSpec  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHAT, EMBED, VEC = "smollm2-135m-instruct", "all-minilm-l6-v2", "vec"
ASK = PipelineSpec(
    "ask",
    (
        StageSpec("vec", "embed", VEC),
        StageSpec(
            "answer", "chat", CHAT, ("vec",), (Message("user", "{{ input }}"),), sampling={"max_tokens": 2}
        ),
    ),
)
REPLICA_PREFIX = "SERVE_REPLICA::swiftserve#SwiftServeReplica#"


def _router(*models: str, pipelines: tuple[PipelineSpec, ...] = ()) -> RouterConfig:
    return RouterConfig.from_flags(
        models,
        memory_budget=2 << 30,
        max_model_len=512,
        kv_cache_memory=32 << 20,
        idle_timeout_s=300,
        pipelines=pipelines,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def replica_stats() -> dict[str, dict]:
    """Every replica's routing stats, asked of the replica actors themselves."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    stats = {}
    for name in names:
        if name.startswith(REPLICA_PREFIX):
            actor = ray.get_actor(name, namespace="serve")
            try:
                stats[name] = ray.get(actor.record_routing_stats.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a replica starting or dying: not counted
                continue
    return stats


@pytest.fixture(scope="module")
def cluster():
    port = _free_port()
    groups = (ReplicaGroup("chatters", 1, (CHAT,)), ReplicaGroup("vectors", 1, (VEC,)))
    spec = ServeSpec(
        _router(CHAT, EMBED, f"{VEC}={EMBED}", pipelines=(ASK,)),
        ReplicaSetConfig(num_replicas=2, num_cpus=1, groups=groups),
    )
    options = ClusterOptions(num_cpus=2, object_store_bytes=200 << 20, port=port)
    try:
        deploy(spec, options, wait=True)
        base = f"http://127.0.0.1:{port}"
        _wait(
            lambda: httpx.get(base + "/health", timeout=10).status_code == 200,
            60,
            "the ingress to see replicas",
        )
        _wait(
            lambda: len([s for s in replica_stats().values() if s.get("seq")]) == 2,
            30,
            "two replicas' reports",
        )
        time.sleep(2.0)  # the reports reach the request router (ROUTING_STATS_PERIOD_S, broadcast)
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)


def test_openai_sdk_through_ray(cluster):
    client = _client(cluster)
    messages = [{"role": "user", "content": "Say hi"}]
    reply = client.chat.completions.create(model=CHAT, messages=messages, max_tokens=4)
    assert reply.choices[0].message.content and reply.model == CHAT
    stream = client.chat.completions.create(model=CHAT, messages=messages, max_tokens=4, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason
    vectors = client.embeddings.create(model=EMBED, input=["a", "b"])
    assert [len(d.embedding) for d in vectors.data] == [384, 384]
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="nope", messages=messages)
    assert error.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=CHAT, messages=messages, temperature=-1)
    assert bad.value.body["param"] == "temperature"


def test_metrics_cover_every_replica(cluster):
    """GET /metrics through the ingress: both replicas' series, each labelled with its replica."""
    response = httpx.get(cluster + "/metrics", timeout=30)
    assert response.status_code == 200
    ids = sorted(name.rsplit("#", 1)[-1] for name in replica_stats())
    labelled = {i: f'replica="{i}"' in response.text for i in ids}
    assert len(ids) == 2 and labelled == {i: True for i in ids}, response.text[:2000]
    assert "swiftserve_metrics_replicas_missing 0.0" in response.text


def test_a_model_resident_on_one_replica_gets_its_requests_there(cluster):
    before = replica_stats()
    resident = [n for n, s in before.items() if s["models"][CHAT] == "resident"]
    assert len(resident) == 1, before
    client = _client(cluster)
    for _ in range(4):
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    after = replica_stats()
    sent = {n: after[n]["num_requests"].get(CHAT, 0) - before[n]["num_requests"].get(CHAT, 0) for n in after}
    assert sent == {n: (4 if n == resident[0] else 0) for n in after}
    assert [s["models"][CHAT] for n, s in after.items() if n != resident[0]] == ["cold"]


def test_a_pipeline_runs_each_stage_on_the_replica_holding_its_model(cluster):
    before = replica_stats()
    (chat_at,) = [n for n, s in before.items() if s["models"][CHAT] == "resident"]
    (vec_at,) = [n for n, s in before.items() if s["models"][VEC] == "resident"]
    assert chat_at != vec_at, before
    reply = _client(cluster).chat.completions.create(
        model="ask", messages=[{"role": "user", "content": "Say hi"}], max_tokens=2
    )
    assert reply.model == "ask" and reply.choices[0].message.content is not None
    after = replica_stats()

    def sent(key: str) -> dict[str, dict[str, int]]:
        models = ("ask", CHAT, VEC)
        return {n: {m: after[n][key].get(m, 0) - before[n][key].get(m, 0) for m in models} for n in after}

    (entry,) = [n for n, counts in sent("num_requests").items() if counts["ask"] == 1]
    other, held_there = (chat_at, CHAT) if entry == vec_at else (vec_at, VEC)
    # The stage whose model the entry replica lacks was pre-warmed and ran on the other replica;
    # the other stage ran on the entry replica, which holds its model.
    expected = {n: {"ask": 0, CHAT: 0, VEC: 0} for n in after}
    expected[other][held_there] = 1
    assert sent("num_stage_calls") == expected
    assert sent("num_prewarms") == expected
    for name in after:  # no replica loaded a model it does not hold
        assert after[name]["models"] == before[name]["models"]
        assert after[name]["num_loads"] == before[name]["num_loads"]


def test_a_session_sticks_to_one_replica(cluster):
    before = replica_stats()
    for _ in range(5):
        response = httpx.post(
            cluster + "/v1/embeddings",
            json={"model": EMBED, "input": "same session"},
            headers={"x-session-id": "user-42"},
            timeout=60,
        )
        assert response.status_code == 200
    after = replica_stats()
    sent = sorted(
        after[n]["num_requests"].get(EMBED, 0) - before[n]["num_requests"].get(EMBED, 0) for n in after
    )
    assert sent == [0, 5]


def test_more_replicas_than_the_cluster_can_place_is_an_error_naming_the_resource(cluster):
    spec = ServeSpec(_router(EMBED), ReplicaSetConfig(num_replicas=3, num_cpus=1), app_name="too-big")
    with pytest.raises(PlacementError, match="3 replicas x num_cpus 1 need 3 CPU; the cluster has 2"):
        deploy(spec, ClusterOptions())
    assert "too-big" not in serve.status().applications


def test_no_replica_ready_is_503_with_retry_after(cluster):
    # Replicas that can never start (their model does not exist): the ingress is up, none is ready.
    spec = ServeSpec(
        _router("broken=/nonexistent/model.gguf"),
        ReplicaSetConfig(num_replicas=1, num_cpus=0),
        app_name="broken",
    )
    from swiftserve.ray.application import build_app

    serve.run_many(
        [serve.RunTarget(build_app(spec), name="broken", route_prefix="/broken")],
        wait_for_applications_running=False,
    )
    try:

        def answered():
            response = httpx.post(
                cluster + "/broken/v1/embeddings", json={"model": "broken", "input": "x"}, timeout=30
            )
            return response if response.status_code != 404 else None

        response = _wait(answered, 60, "the broken app's ingress")
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "service_unavailable"
        assert httpx.get(cluster + "/broken/health", timeout=10).status_code == 503
    finally:
        serve.delete("broken")


def test_a_replica_killed_mid_run(cluster):
    """Its stream in flight ends with a clear error (or is retried); new requests go to the survivor."""
    stats = replica_stats()
    (victim,) = [n for n, s in stats.items() if s["models"][CHAT] == "resident"]
    client = _client(cluster)
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Count to one hundred."}],
        max_tokens=400,
        stream=True,
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    ended_with = None
    try:
        for _ in stream:
            pass
    except (openai.APIError, httpx.HTTPError) as exc:
        ended_with = exc
    assert ended_with is not None and "replica" in str(ended_with).lower()
    # New requests: the survivor answers both models (it loads the chat model on demand).
    vectors = client.embeddings.create(model=EMBED, input=["after the kill"])
    assert len(vectors.data[0].embedding) == 384
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content is not None
