"""The compound benchmark's llama.cpp peer: the static deployment built from llama.cpp instead of swiftserve.

One llama-cpp-python server (`python -m llama_cpp.server`) per model, on the static deployment's
cores (static_cpus: big alone on the upper half, the three small models sharing the lower half)
with as many llama.cpp threads as cores, each on its model's GGUF (make_ggufs.py: the weights
swiftserve serves, in the same dtypes); the pipelines run by the same client orchestrator as
static's. A user deploying llama.cpp per model gets this: each server runs one request at a time.

Fixed-length outputs: llama-cpp-python has no ignore_eos. Its min_tokens bans only the model's
EOS token, while llama.cpp ends a generation on any end-of-generation token (Gemma's
<end_of_turn> too), so every call carries a logit_bias that bans each token that llama.cpp
itself reports as end-of-generation (read from the GGUF's vocabulary by llama.cpp).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from benchmarks.compound.make_ggufs import gguf_path
from benchmarks.compound.server_proc import Proc
from benchmarks.compound.systems import Setup, System, static_cpus

SERVER_PACKAGES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
BANNED = -1e9  # a logit bias no logit survives (JSON has no -inf)


def missing(sources: dict[str, str]) -> str:
    """Why the peer cannot run here ('' if it can): the server package, or a GGUF."""
    absent = [p for p in SERVER_PACKAGES if importlib.util.find_spec(p) is None]
    if absent:
        return f"{', '.join(absent)} not installed (pip install 'llama-cpp-python[server]')"
    lacking = [str(g) for g in (gguf_path(n, s) for n, s in sources.items()) if not g.exists()]
    if lacking:
        return f"no {', '.join(lacking)} (make them: python benchmarks/compound/make_ggufs.py [--ci])"
    return ""


def server_args(gguf: Path, alias: str, threads: int, n_ctx: int, embedding: bool) -> list[str]:
    """llama-cpp-python's server flags for one model (the host and port come from LlamaProc)."""
    flags = ["--model", str(gguf), "--model_alias", alias, "--n_ctx", str(n_ctx)]
    flags += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    # a new request waits for the running one (the default, True, cancels the running one for it)
    return flags + ["--embedding", str(embedding), "--interrupt_requests", "False"]


@dataclass
class LlamaProc(Proc):
    """One llama-cpp-python server; `args` are its server_args."""

    health: ClassVar[str] = "/v1/models"  # it has no /health

    def command(self) -> list[str]:
        serve = ["--host", "127.0.0.1", "--port", str(self.port)]
        return [sys.executable, "-m", "llama_cpp.server", *self.args, *serve]


def eog_tokens(gguf: Path) -> list[int]:
    """Every token llama.cpp ends a generation on, as llama.cpp reads the vocabulary (no weights)."""
    import llama_cpp as ll

    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(gguf).encode(), params)
    if not model:
        raise RuntimeError(f"llama.cpp could not read {gguf}")
    try:
        vocab = ll.llama_model_get_vocab(model)
        return [t for t in range(ll.llama_vocab_n_tokens(vocab)) if ll.llama_vocab_is_eog(vocab, t)]
    finally:
        ll.llama_model_free(model)


def fixed_length(banned: dict[str, list[int]]):
    """systems.System.fixed_length for llama.cpp: greedy, max_tokens, every EOG token banned."""

    def fields(model: str, max_tokens: int) -> dict:
        bias = {str(t): BANNED for t in banned[model]}
        return {"max_tokens": max_tokens, "temperature": 0.0, "logit_bias": bias}

    return fields


def llamacpp_system(setup: Setup) -> System:
    procs, banned = [], {}
    for name, source in setup.sources.items():
        gguf, cpus = gguf_path(name, source), static_cpus(setup.cpus, name)
        args = server_args(gguf, name, len(cpus), setup.max_model_len, embedding=name == "embed")
        procs.append(LlamaProc(f"llamacpp-{name}", args, cpus, setup.logdir))
        banned[name] = [] if name == "embed" else eog_tokens(gguf)
    routes = {p.name.removeprefix("llamacpp-"): p.base for p in procs}
    return System("llamacpp", procs, routes, orchestrated=True, fixed_length=fixed_length(banned))
