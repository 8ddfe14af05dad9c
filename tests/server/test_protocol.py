"""Schemas, error mapping, SSE framing and CLI parsing: plain unit tests, no server."""

from __future__ import annotations

import json

import msgspec
import pytest
from swiftserve.router.router_config import RouterConfig
from swiftserve.scheduler.memory_budget import parse_bytes

from swiftserve.cli_parser import build_parser
from swiftserve.server.errors import APIError, from_validation_error
from swiftserve.server.launch import ServeConfig
from swiftserve.server.protocol import decode_request
from swiftserve.server.protocol_chat import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
)
from swiftserve.server.protocol_common import encode
from swiftserve.server.protocol_completions import CompletionRequest
from swiftserve.server.protocol_embeddings import EmbeddingRequest
from swiftserve.server.streaming import DONE, sse_error, sse_event


def _decode(body: dict, type_=ChatCompletionRequest):
    return decode_request(json.dumps(body).encode(), type_)


def _error(body, type_=ChatCompletionRequest) -> APIError:
    with pytest.raises(APIError) as info:
        decode_request(body if isinstance(body, bytes) else json.dumps(body).encode(), type_)
    assert info.value.status == 400
    return info.value


def test_chat_request_defaults():
    request = _decode({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert (request.n, request.stream, request.logprobs, request.max_tokens) == (1, False, False, None)
    assert request.temperature is None and request.ignore_eos is False


def test_reference_fields_that_ask_for_nothing_are_accepted():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "user": "u",
        "store": False,
        "metadata": {"a": "b"},
        "tools": [],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "stream_options": {"include_usage": True},
    }
    assert _decode(body).stream_options.include_usage


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": []}, "model", "missing_required_parameter"),
        ({"model": "m", "messages": [], "extra": 1}, "extra", "unknown_field"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x", "x": 1}]},
            "messages[0].x",
            "unknown_field",
        ),
        ({"model": "m", "messages": [{"role": "bot"}]}, "messages[0].role", "invalid_value"),
        ({"model": "m", "messages": [], "n": 0}, "n", "invalid_value"),
        ({"model": "m", "messages": [], "seed": 2**70}, "seed", "invalid_value"),
        ({"model": "m", "messages": [], "audio": {}}, "audio", "unsupported_parameter"),
        ({"model": "m", "messages": [], "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        ({"model": "m", "messages": [], "functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ],
)
def test_chat_request_errors_name_the_field(body, param, code):
    error = _error(body)
    assert (error.param, error.code) == (param, code)
    assert param.split(".")[-1].split("[")[0] in error.message


def test_body_level_errors():
    assert _error(b"[1, 2]").code == "invalid_value"
    assert _error(b"{").code == "invalid_json"
    assert "UTF-8" in _error(b'{"model": "\xff"}').message


def test_completion_and_embedding_requests():
    request = _decode({"model": "m", "prompt": [[1, 2], [3]]}, CompletionRequest)
    assert request.max_tokens == 16 and request.prompt == [[1, 2], [3]]
    assert _error({"model": "m", "prompt": "x", "best_of": 3}, CompletionRequest).param == "best_of"
    assert _decode({"model": "m", "input": ["a"]}, EmbeddingRequest).encoding_format == "float"


def test_validation_error_without_path():
    error = from_validation_error(msgspec.ValidationError("Expected `object`, got `array`"))
    assert error.param is None and error.message.startswith("Invalid request body")


def test_error_body_shape():
    error = APIError(
        429, "slow down", type="rate_limit_error", code="queue_full", headers={"retry-after": "1"}
    )
    assert json.loads(error.to_json()) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "queue_full"}
    }


def test_sse_framing():
    assert sse_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert sse_error(APIError(500, "x")).startswith(b'data: {"error":')


def test_chunk_encoding_omits_unset_fields():
    chunk = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[ChatChunkChoice(index=0, delta=ChatDelta(content="hi"))]
    )
    decoded = json.loads(encode(chunk))
    assert "usage" not in decoded and decoded["choices"][0]["delta"] == {"content": "hi"}
    assert decoded["object"] == "chat.completion.chunk"
    chunk.usage = None
    assert json.loads(encode(chunk))["usage"] is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("1024", 1024), ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("64k", 64_000)],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-5MiB"])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


@pytest.mark.parametrize("flag", ["--memory-budget", "--kv-cache-memory", "--max-body-bytes"])
def test_size_flags_must_be_positive(flag):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", flag, "0"])


def test_cli_launch_arguments():
    args = build_parser().parse_args(
        ["launch", "--models", "a=smollm2-135m-instruct", "--kv-cache-memory", "256MiB", "--max-queue", "0"]
    )
    assert (args.models, args.kv_cache_memory, args.max_queue, args.host, args.port) == (
        "a=smollm2-135m-instruct",
        256 * 2**20,
        0,
        "127.0.0.1",
        8000,
    )
    assert args.max_body_bytes == 8 * 2**20
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--max-num-seqs", "0"])


def test_serve_config_rejects_duplicate_names():
    with pytest.raises(ValueError, match="served twice"):
        RouterConfig.from_flags(("smollm2-135m-instruct", "smollm2-135m-instruct"))
    config = RouterConfig.from_flags()
    assert [(m.name, m.policy) for m in config.models] == [
        ("smollm2-135m-instruct", "pinned"),
        ("all-minilm-l6-v2", "pinned"),
    ]
    with pytest.raises(ValueError, match="port"):
        ServeConfig(config, port=70000)


def test_serve_config_models_from_flags_or_a_file(tmp_path):
    flags = RouterConfig.from_flags(("a=smollm2-135m-instruct",), ("all-minilm-l6-v2",), idle_timeout_s=5)
    assert [(m.name, m.policy, m.idle_timeout_s) for m in flags.models] == [
        ("a", "pinned", None),
        ("all-minilm-l6-v2", "on-demand", 5),
    ]
    only_on_demand = RouterConfig.from_flags(on_demand=("smollm2-135m-instruct",))
    assert [m.policy for m in only_on_demand.models] == ["on-demand"]  # no defaults added
    path = tmp_path / "swiftserve.yaml"
    path.write_text(
        "memory_budget: 2GiB\nmodels:\n  - source: smollm2-135m-instruct\n    policy: on-demand\n"
    )
    from_file = RouterConfig.build(config_file=path)
    assert from_file.budget_bytes() == 2 * 2**30 and from_file.models[0].policy == "on-demand"
    assert RouterConfig.build(config_file=path, memory_budget=10**9).budget_bytes() == 10**9  # the flag wins
    with pytest.raises(ValueError, match="not both"):
        RouterConfig.build(("smollm2-135m-instruct",), config_file=path)
    path.write_text("models:\n  - source: smollm2-135m-instruct\n    polcy: pinned\n")
    with pytest.raises(ValueError, match="polcy"):
        RouterConfig.build(config_file=path)


def test_a_bad_memory_budget_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text("memory_budget: lots\nmodels:\n  - source: smollm2-135m-instruct\n")
    with pytest.raises(ValueError, match=rf"{path}: memory_budget: expected a byte count"):
        RouterConfig.from_file(path)
