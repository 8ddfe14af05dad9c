"""A fake chat engine and embedder with the real engines' interfaces, for fast app tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from swiftserve.engine.errors import ContextLengthError, QueueFullError
from swiftserve.engine.served_model import Footprint
from swiftserve.outputs import CompletionOutput, RequestOutput, TokenLogprob


@dataclass
class FakeStats:
    num_running: int
    num_waiting: int
    num_free_blocks: int
    num_total_blocks: int
    kv_cache_usage: float
    num_preemptions: int = 0


class FakeTokenizer:
    """One token per character: id = ord(c); id 0 is EOS."""

    eos_token_ids = (0,)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids if i)


class FakeChatEngine:
    """Echoes the reversed prompt one character per step (step_s apart); 1 KV block per request."""

    def __init__(
        self, max_model_len: int = 256, step_s: float = 0.002, max_running: int = 4, max_waiting=None
    ):
        self.tokenizer = FakeTokenizer()
        self.max_model_len = max_model_len
        self.model_name = "fake"
        self.step_s = step_s
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running: set[str] = set()
        self.waiting: list[str] = []
        self.aborted: list[str] = []
        self.is_shut_down = False
        self._stop = asyncio.Event()

    def apply_chat_template(self, messages, add_generation_prompt=True) -> str:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def stats(self) -> FakeStats:
        used = len(self.running)
        return FakeStats(used, len(self.waiting), 100 - used, 100, used / 100)

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        self.is_shut_down = True
        self._stop.set()

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def generate(self, prompt, params, request_id=None, priority=0):
        if self.is_shut_down:
            raise RuntimeError("engine is shut down")
        ids = prompt if isinstance(prompt, list) else self.tokenizer.encode(prompt)
        if len(ids) + params.max_tokens > self.max_model_len:
            raise ContextLengthError(len(ids), params.max_tokens, self.max_model_len, "max_tokens")
        if self.max_waiting is not None and len(self.waiting) >= self.max_waiting:
            raise QueueFullError("queue full")
        self.waiting.append(request_id)
        finished = False
        try:
            while len(self.running) >= self.max_running:
                await asyncio.sleep(self.step_s)
            self.waiting.remove(request_id)
            self.running.add(request_id)
            source = self.tokenizer.decode(ids)[::-1] or "x"
            outs = [
                CompletionOutput(
                    index=i, text="", token_ids=[], logprobs=[] if params.logprobs is not None else None
                )
                for i in range(params.n)
            ]
            for step in range(params.max_tokens):
                await asyncio.sleep(self.step_s)
                if self._stop.is_set():
                    for out in outs:
                        out.finish_reason = "abort"
                    finished = True
                    yield RequestOutput(request_id, None, list(ids), outs, finished=True)
                    return
                char = source[step % len(source)]
                for out in outs:
                    out.token_ids = out.token_ids + [ord(char)]
                    out.text = out.text + char
                    if out.logprobs is not None:
                        out.logprobs = out.logprobs + [
                            TokenLogprob(ord(char), -0.5, [(ord(char), -0.5), (ord("z"), -1.5)])
                        ]
                    if any(s in out.text for s in params.stop):
                        out.text = out.text[: out.text.index(next(s for s in params.stop if s in out.text))]
                        out.finish_reason = "stop"
                    elif len(out.token_ids) == params.max_tokens:
                        out.finish_reason = "length"
                finished = all(o.finish_reason for o in outs)
                yield RequestOutput(
                    request_id, None, list(ids), [CompletionOutput(**vars(o)) for o in outs], finished
                )
                if finished:
                    return
        finally:
            if request_id in self.waiting:
                self.waiting.remove(request_id)
            self.running.discard(request_id)
            if not finished:
                self.aborted.append(request_id)


@dataclass
class FakeEmbeddingResult:
    embeddings: np.ndarray
    num_prompt_tokens: int


class FakeEmbeddingEngine:
    dim = 4
    max_seq_length = 128

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def embed(self, inputs):
        rows = []
        tokens = 0
        for item in inputs:
            ids = [ord(c) for c in item] if isinstance(item, str) else item
            tokens += len(ids)
            rows.append([len(ids), sum(ids) % 97, 1.0, -0.25])
        return FakeEmbeddingResult(np.asarray(rows, dtype=np.float32), tokens)


class FakeServed:
    """A fake engine as the router serves it (engine/served_model.py): always running, so its
    stats show from the start; unload shuts the engine down (aborting what is in flight)."""

    def __init__(self, name: str, kind: str, engine) -> None:
        self.name, self.kind, self.engine = name, kind, engine
        self.is_resident = True

    def footprint(self) -> Footprint:
        return Footprint(weight_bytes=1000, kv_block_bytes=10, kv_floor_blocks=1)

    async def load(self) -> None:
        pass

    async def unload(self, *, force: bool = False) -> None:
        await self.engine.shutdown()

    def __getattr__(self, name):
        # tokenizer, max_model_len, dim, apply_chat_template, generate, embed: the engine's
        return getattr(self.engine, name)
