"""CI's smoke of the main job: waits for `make run`'s server, asks it one chat completion and one
embedding, and fails unless both are answered. Standard library only: it runs before the install."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request


def call(url: str, body: dict | None = None, timeout: float = 120) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(base: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            call(f"{base}/health", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise SystemExit(f"smoke: no server at {base} after {deadline_s:.0f} s")


def main(base: str, deadline_s: float) -> int:
    wait_ready(base, deadline_s)
    models = {m["id"]: m for m in call(f"{base}/v1/models")["data"]}
    chat_model = next(name for name, m in models.items() if m.get("kind") == "chat")
    embed_model = next(name for name, m in models.items() if m.get("kind") == "embedding")
    chat = call(
        f"{base}/v1/chat/completions",
        {
            "model": chat_model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16,
            "temperature": 0,
        },
    )
    text = chat["choices"][0]["message"]["content"]
    assert text.strip(), f"empty chat answer: {chat}"
    embedding = call(f"{base}/v1/embeddings", {"model": embed_model, "input": "a sentence to embed"})
    vector = embedding["data"][0]["embedding"]
    assert len(vector) > 0 and any(vector), f"bad embedding: {embedding}"
    print(f"smoke: {chat_model} answered {text!r}; {embed_model} gave {len(vector)} dimensions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1800))
