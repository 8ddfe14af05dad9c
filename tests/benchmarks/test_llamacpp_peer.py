"""The llama.cpp peer of the compound benchmark (benchmarks/compound/) and benchmarks/structured.py,
its pure parts: the cores each model's server gets (the static deployment's split), the server's
command line, the fields that make a call greedy and exactly max_tokens long, where each model's
GGUF is looked for, and the constrained requests' body."""

from __future__ import annotations

import sys
from pathlib import Path

from .root_path import root_on_path

with root_on_path():
    from benchmarks.compound.llamacpp import LlamaProc, fixed_length, server_args
    from benchmarks.compound.make_ggufs import gguf_path
    from benchmarks.compound.systems import static_cpus


def test_big_alone_on_the_upper_half_the_small_models_share_the_lower_half():
    cpus = [0, 1, 2, 3]
    assert static_cpus(cpus, "big") == [2, 3]
    assert [static_cpus(cpus, m) for m in ("embed", "smol", "gemma")] == [[0, 1]] * 3


def test_two_cores_one_each_and_one_core_shared_by_all():
    assert (static_cpus([0, 1], "big"), static_cpus([0, 1], "smol")) == ([1], [0])
    assert static_cpus([5], "big") == static_cpus([5], "embed") == [5]


def test_odd_core_counts_give_big_the_larger_half():
    assert (static_cpus([0, 1, 2], "big"), static_cpus([0, 1, 2], "gemma")) == ([1, 2], [0])


def test_server_command_line(tmp_path):
    args = server_args(Path("/g/smol.gguf"), "smol", 2, 512, embedding=False)
    proc = LlamaProc("llamacpp-smol", args, [0, 1], tmp_path, port=8123)
    assert proc.command() == [
        sys.executable, "-m", "llama_cpp.server", "--model", "/g/smol.gguf", "--model_alias", "smol",
        "--n_ctx", "512", "--n_threads", "2", "--n_threads_batch", "2", "--embedding", "False",
        "--interrupt_requests", "False", "--host", "127.0.0.1", "--port", "8123",
    ]  # fmt: skip
    assert proc.health == "/v1/models"


def test_the_embedder_serves_embeddings():
    args = server_args(Path("e.gguf"), "embed", 1, 512, embedding=True)
    assert args[args.index("--embedding") + 1] == "True"


def test_every_end_of_generation_token_of_the_model_is_banned():
    fields = fixed_length({"gemma": [1, 106], "smol": [0, 2]})
    assert fields("gemma", 12) == {
        "max_tokens": 12, "temperature": 0.0, "logit_bias": {"1": -1e9, "106": -1e9}
    }  # fmt: skip
    assert fields("smol", 8)["logit_bias"] == {"0": -1e9, "2": -1e9}


def test_gguf_names_say_the_model_and_its_dtype(tmp_path):
    assert (
        gguf_path("smol", "smollm2-135m-instruct", tmp_path) == tmp_path / "smollm2-135m-instruct-bf16.gguf"
    )
    assert gguf_path("embed", "all-minilm-l6-v2", tmp_path) == tmp_path / "all-minilm-l6-v2-f32.gguf"
    snapshot = "/w/llama-3.2-1b-dummy.swsnap"
    assert gguf_path("big", snapshot, tmp_path) == tmp_path / "llama-3.2-1b-dummy-bf16.gguf"


def test_structured_peer_requests_say_the_schema_in_llama_cpp_python_s_dialect():
    from benchmarks.structured_llamacpp import request_body

    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}
    body = request_body("List numbers.", 64, schema, [2])
    assert body == {
        "messages": [{"role": "user", "content": "List numbers."}], "max_tokens": 64, "temperature": 0.0,
        "logit_bias": {"2": -1e9}, "response_format": {"type": "json_object", "schema": schema},
    }  # fmt: skip
    assert "response_format" not in request_body("List numbers.", 64, None, [2])
