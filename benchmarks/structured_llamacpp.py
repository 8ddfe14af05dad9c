"""structured.py's llama.cpp peer: the same constrained and free requests, sent at the same
concurrencies to a llama-cpp-python server on the model's GGUF (benchmarks/compound/make_ggufs.py:
the weights swiftserve serves, in the same dtype), every core of this process for its threads.

The constraint is the same JSON schema; llama-cpp-python spells it in its own dialect of
response_format ({"type": "json_object", "schema": ...}: it rejects "json_schema") and turns it
into a llama.cpp grammar. Both sides must produce exactly max_tokens tokens: the schema cannot end
sooner, and every end-of-generation token is banned by logit_bias (llama-cpp-python has no
ignore_eos; see benchmarks/compound/llamacpp.py). The server runs one request at a time: its
concurrency is a queue, which is what a user of its server gets.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.compound.llamacpp import BANNED, LlamaProc, eog_tokens, missing, server_args
from benchmarks.compound.make_ggufs import gguf_path


def request_body(prompt: str, max_tokens: int, schema: dict | None, banned: list[int]) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0}
    body["logit_bias"] = {str(t): BANNED for t in banned}
    if schema is not None:
        body["response_format"] = {"type": "json_object", "schema": schema}
    return body


async def _post(client: httpx.AsyncClient, base: str, body: dict) -> int:
    r = await client.post(base + "/v1/chat/completions", json=body)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


async def peer_run(base: str, body: dict, concurrency: int) -> dict:
    """`concurrency` copies of the request at once, after one short one (grammar compiled, warm)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(None)) as client:
        await _post(client, base, body | {"max_tokens": 2})
        start = time.perf_counter()
        tokens = await asyncio.gather(*(_post(client, base, body) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    expected = concurrency * body["max_tokens"]
    assert sum(tokens) == expected, f"llama.cpp ended early: {sum(tokens)} of {expected} tokens"
    constrained = "response_format" in body
    return {"system": "llamacpp", "concurrency": concurrency, "constrained": constrained,
            "tokens_per_s": sum(tokens) / elapsed}  # fmt: skip


def llamacpp_rows(model: str, prompt: str, schema: dict, levels: list[int], max_tokens: int) -> list[dict]:
    """Free, then constrained, at each concurrency, against one server on the model's GGUF."""
    reason = missing({"smol": model})
    if reason:
        raise SystemExit(f"--peer llamacpp: {reason}")
    gguf, cpus = gguf_path("smol", model), sorted(os.sched_getaffinity(0))
    args = server_args(gguf, "smol", len(cpus), n_ctx=1024, embedding=False)
    proc = LlamaProc("llamacpp-structured", args, cpus, Path(tempfile.mkdtemp(prefix="structured_")))
    banned, rows = eog_tokens(gguf), []
    proc.start()
    try:
        proc.wait_ready()
        for c in levels:
            free = asyncio.run(peer_run(proc.base, request_body(prompt, max_tokens, None, banned), c))
            held = asyncio.run(peer_run(proc.base, request_body(prompt, max_tokens, schema, banned), c))
            held["slowdown_pct"] = 100 * (1 - held["tokens_per_s"] / free["tokens_per_s"])
            rows += [free, held]
    finally:
        proc.stop()
    return rows
