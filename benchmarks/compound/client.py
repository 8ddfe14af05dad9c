"""The calls the benchmark's client makes to a system's OpenAI-compatible servers."""

from __future__ import annotations

import httpx
import numpy as np


class Refused(Exception):
    """A 429: the server's queue for the request was full."""


def _check(r: httpx.Response) -> dict:
    if r.status_code == 429:
        raise Refused(r.text[:200])
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


async def chat(client: httpx.AsyncClient, base: str, model: str, content: str, fields: dict) -> dict:
    """fields: the system's fixed_length ones ({} for a swiftserve pipeline: its stages carry theirs)."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": content}], **fields}
    return _check(await client.post(base + "/v1/chat/completions", json=body))


async def complete(client: httpx.AsyncClient, base: str, model: str, prompt: str, fields: dict) -> dict:
    body = {"model": model, "prompt": prompt, **fields}
    return _check(await client.post(base + "/v1/completions", json=body))


async def embed(client: httpx.AsyncClient, base: str, texts: list[str]) -> np.ndarray:
    data = _check(await client.post(base + "/v1/embeddings", json={"model": "embed", "input": texts}))
    return np.asarray([row["embedding"] for row in data["data"]], dtype=np.float32)
