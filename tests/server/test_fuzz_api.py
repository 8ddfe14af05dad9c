"""A seeded fuzz of the OpenAI API on the real server (chat, embeddings, both behind one router):
hundreds of requests whose fields take odd values of every JSON type, plus unknown fields, wrong
top-level shapes and broken bodies. No answer may be a 5xx; every refusal is OpenAI's error object;
the server still answers a good request afterwards and holds no KV block."""

from __future__ import annotations

import concurrent.futures
import json
import random

import httpx
import pytest

from .live_server import CHAT, EMBED, Server

pytestmark = pytest.mark.slow

ODD = [
    None, True, False, 0, 1, -1, 2, 3, 2**31, 2**63, -(2**63), 0.5, -0.0, 1e308, -1e308, 1e-320,
    "", "a", "\u0000", "x" * 5000, "1", "null", [], [1], ["a"], [[1, 2]], [None], {}, {"a": 1},
]  # fmt: skip
CHAT_FIELDS = [
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n",
    "stop", "seed", "stream", "stream_options", "logprobs", "top_logprobs", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "logit_bias", "user", "response_format", "tools",
    "tool_choice", "ignore_eos", "min_tokens", "prompt_logprobs", "n_choices", "stop_token_ids",
]  # fmt: skip
COMPLETION_FIELDS = ["prompt", "echo", "suffix", "best_of", *CHAT_FIELDS[2:]]
EMBED_FIELDS = ["model", "input", "encoding_format", "dimensions", "user"]
MESSAGES = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user"}],
    [{"role": "robot", "content": "Hi"}],
    [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    [{"role": "system", "content": "s"}, {"role": "assistant", "content": None}],
    [],
]


def _value(rng: random.Random, field: str):
    if field == "messages" and rng.random() < 0.6:
        return rng.choice(MESSAGES)
    if field == "model" and rng.random() < 0.7:
        return rng.choice([CHAT, EMBED, "no-such-model"])
    if field in ("max_tokens", "max_completion_tokens") and rng.random() < 0.5:
        return rng.choice([1, 2, 4])  # valid ones stay short: the run stays fast
    if field in ("prompt", "input") and rng.random() < 0.5:
        return rng.choice(["Hello", ["a", "b"], [1, 2, 3], [[1], [2]], [-5], [10**9], "", []])
    return rng.choice(ODD)


def _body(rng: random.Random, fields: list[str], required: dict) -> object:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice([[], "text", 1, None])  # not an object at all
    body = dict(required)
    for field in rng.sample(fields, k=rng.randint(0, min(6, len(fields)))):
        body[field] = _value(rng, field)
    if rng.random() < 0.1:
        body[f"unknown_{rng.randint(0, 9)}"] = rng.choice(ODD)
    if rng.random() < 0.1:
        body.pop(rng.choice(list(body) or ["model"]), None)
    if "input" not in required:  # a generation: short unless the fuzz set its length
        body.setdefault("max_tokens", 2)
    return body


def _requests(seed: int, count: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    kinds = [
        ("/v1/chat/completions", CHAT_FIELDS, {"model": CHAT, "messages": MESSAGES[0]}),
        ("/v1/completions", COMPLETION_FIELDS, {"model": CHAT, "prompt": "Hello"}),
        ("/v1/embeddings", EMBED_FIELDS, {"model": EMBED, "input": "Hello"}),
    ]
    out = []
    for _ in range(count):
        path, fields, required = rng.choice(kinds)
        if rng.random() < 0.03:
            out.append((path, rng.choice([b"{", b"\xff\xfe", b"", b'{"model": "x",}', b"[" * 10000])))
            continue
        out.append((path, json.dumps(_body(rng, fields, required)).encode()))
    return out


def _send(url: str, path: str, data: bytes) -> tuple[int, str]:
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=120) as client:
        reply = client.post(url + path, content=data, headers=headers)
        return reply.status_code, reply.text


@pytest.fixture(scope="module")
def server(smollm_dir, minilm_dir):
    live = Server(
        "--models", f"{CHAT},{EMBED}", "--max-model-len", "96", "--kv-cache-memory", "16MiB",
        "--default-max-tokens", "4",
    )  # fmt: skip
    yield live
    live.stop()


@pytest.mark.parametrize("seed", [1, 2])
def test_no_fuzzed_request_gets_a_5xx(server, seed):
    requests = _requests(seed, 300)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda r: (r, _send(server.url, *r)), requests))
    server_errors = [
        (path, data[:300], text[:300]) for (path, data), (status, text) in answers if status >= 500
    ]
    assert server_errors == []
    for _, (status, text) in answers:
        if status >= 400 and text:  # every refusal is an OpenAI error object
            error = json.loads(text)["error"]
            assert isinstance(error["message"], str) and error["message"], text
    statuses = {status for _, (status, _) in answers}
    assert 200 in statuses and 400 in statuses  # the mix reached both the engines and the checks
    assert server.chat("Say hi.").status_code == 200
    assert server.metric('swiftserve_kv_cache_usage_ratio{model="smollm2-135m-instruct"}') == 0
