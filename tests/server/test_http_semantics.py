"""What a fuzzer found against the real server (`swiftserve launch`, the real small chat model):
405s carry `Allow`, `system_fingerprint` is a stable string (never null), and a chat request
without max_tokens stops at `--default-max-tokens`, never past the context."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from swiftserve.router.router_config import RouterConfig

from swiftserve.cli_parser import build_parser
from swiftserve.server.launch import DEFAULT_MAX_TOKENS

pytestmark = pytest.mark.slow

CHAT_MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 128
DEFAULT_CAP = 6  # --default-max-tokens of the server below: small, so the tests stay fast


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url(smollm_dir):
    port = _free_port()
    command = [
        sys.executable, "-m", "swiftserve.cli", "launch",
        "--models", CHAT_MODEL,
        "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN),
        "--kv-cache-memory", "32MiB",
        "--default-max-tokens", str(DEFAULT_CAP),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.2)
    yield base
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("server did not exit within 60 s of SIGTERM")
    assert process.returncode == 0, out


def _post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=120)


def _chat(content: str, **kwargs) -> dict:
    # ignore_eos: the model cannot stop early, so the token counts below are exact.
    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "ignore_eos": True,
        **kwargs,
    }


def _events(response: httpx.Response) -> list[dict]:
    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# ---------------------------------------------------------------- 405 and Allow


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/completions", "POST"),
        ("DELETE", "/v1/embeddings", "POST"),
        ("POST", "/v1/models", "GET"),
        ("POST", "/health", "GET"),
        ("PATCH", "/metrics", "GET"),
    ],
)
def test_405_says_which_methods_the_path_allows(url, method, path, allow):
    response = httpx.request(method, url + path, timeout=30)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_path_is_404_without_allow(url):
    response = httpx.get(url + "/v1/nothing-here", timeout=30)
    assert response.status_code == 404 and "allow" not in response.headers


# ---------------------------------------------------------------- system_fingerprint


def test_system_fingerprint_is_one_stable_string_everywhere(url):
    one = _post(url, "/v1/chat/completions", _chat("Hi", max_tokens=2)).json()
    two = _post(url, "/v1/chat/completions", _chat("Something else", max_tokens=3)).json()
    streamed = _events(
        _post(
            url,
            "/v1/chat/completions",
            _chat("Hi", max_tokens=2, stream=True, stream_options={"include_usage": True}),
        )
    )
    completion = _post(url, "/v1/completions", {"model": CHAT_MODEL, "prompt": "Hi", "max_tokens": 2}).json()
    completion_chunks = _events(
        _post(url, "/v1/completions", {"model": CHAT_MODEL, "prompt": "Hi", "max_tokens": 2, "stream": True})
    )
    fingerprint = one["system_fingerprint"]
    assert isinstance(fingerprint, str) and fingerprint.startswith("fp_") and len(fingerprint) == 15
    assert two["system_fingerprint"] == fingerprint
    assert completion["system_fingerprint"] == fingerprint
    assert len(streamed) >= 3 and len(completion_chunks) >= 2
    assert {chunk["system_fingerprint"] for chunk in streamed + completion_chunks} == {fingerprint}


# ---------------------------------------------------------------- --default-max-tokens


def test_chat_without_max_tokens_stops_at_the_default(url):
    body = _post(url, "/v1/chat/completions", _chat("Tell me a very long story.")).json()
    assert body["usage"]["completion_tokens"] == DEFAULT_CAP
    assert body["choices"][0]["finish_reason"] == "length"


def test_streamed_chat_without_max_tokens_stops_at_the_default(url):
    chunks = _events(
        _post(
            url,
            "/v1/chat/completions",
            _chat("Tell me a long story.", stream=True, stream_options={"include_usage": True}),
        )
    )
    assert chunks[-1]["usage"]["completion_tokens"] == DEFAULT_CAP
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_explicit_limit_beats_the_default_either_way(url, field):
    body = _post(url, "/v1/chat/completions", _chat("Tell me a story.", **{field: DEFAULT_CAP + 4})).json()
    assert body["usage"]["completion_tokens"] == DEFAULT_CAP + 4
    small = _post(url, "/v1/chat/completions", _chat("Tell me a story.", **{field: 2})).json()
    assert small["usage"]["completion_tokens"] == 2


def test_the_default_never_runs_past_the_context(url):
    # Grow the prompt until fewer than DEFAULT_CAP tokens of the context are left.
    words = 1
    for _ in range(30):
        probe = _post(url, "/v1/chat/completions", _chat("word " * words, max_tokens=1)).json()
        room = MAX_MODEL_LEN - probe["usage"]["prompt_tokens"]
        if room < DEFAULT_CAP:
            break
        words += max(1, (room - DEFAULT_CAP + 1) // 2)  # halfway: never past the context
    assert 1 <= room < DEFAULT_CAP
    body = _post(url, "/v1/chat/completions", _chat("word " * words)).json()
    assert body["usage"]["completion_tokens"] == room
    assert body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] == MAX_MODEL_LEN
    assert body["choices"][0]["finish_reason"] == "length"


# ---------------------------------------------------------------- the flag itself (no server)


def test_default_max_tokens_flag(capsys):
    parser = build_parser()
    assert parser.parse_args(["launch"]).default_max_tokens == DEFAULT_MAX_TOKENS == 1024
    assert parser.parse_args(["launch", "--default-max-tokens", "77"]).default_max_tokens == 77
    with pytest.raises(SystemExit):
        parser.parse_args(["launch", "--default-max-tokens", "0"])
    with pytest.raises(ValueError, match="default_max_tokens"):
        RouterConfig.from_flags(default_max_tokens=0)
    with pytest.raises(SystemExit):
        parser.parse_args(["launch", "--help"])
    assert "--default-max-tokens" in capsys.readouterr().out
