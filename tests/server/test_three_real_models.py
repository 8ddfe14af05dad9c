"""Three real models in one server process (`swiftserve launch` in a subprocess): SmolLM2-135M-Instruct
and Gemma 3 270M (chat) beside all-MiniLM-L6-v2 (embeddings), float32 so that greedy tokens are exact.

1. All three pinned: concurrent chat and embedding requests to all of them at once each get the
   answer of its model run alone (the greedy tokens of transformers reading the chat models'
   original GGUF files itself, sentence-transformers' vectors).
2. All three on demand under a memory budget that holds Gemma or SmolLM2 (with MiniLM) but never
   both chat models: two rounds of concurrent mixed requests still all answer correctly, so at
   least one chat model is evicted and loaded again, which /v1/models (polled throughout) and the
   load / unload counters show, and the two chat models are never resident together.
Both servers end with every KV block of their resident chat models free."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from swiftserve.loader import source_gguf
from swiftserve.loader.gguf_gemma3 import GEMMA3_CHAT_TEMPLATE

from .live_server import Server as LiveServer

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
EMBED = "all-minilm-l6-v2"
CHAT_MODELS = (SMOL, GEMMA)
MAX_MODEL_LEN = 512
BLOCK_SIZE = 16  # SchedulerConfig's default: the KV floor the budget counts is in these blocks
NUM_NEW = 16
# float32 everywhere: in bfloat16 a batch (other requests of the same model) may flip a greedy near-tie.
SERVER_ARGS = ("--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--kv-cache-memory", "32MiB")
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
]
TEXTS = ["The cat sits on the mat.", "Serving three models in one process.", "héllo wörld ✓"]
# What Gemma's base-model GGUF lacks and the converter adds (its template is checked against
# Gemma's turn format in tests/models/test_gemma3_greedy.py): the chat template, and <end_of_turn>
# as a stop token, which the served model's min_tokens masks too.
CHAT_TEMPLATES = {GEMMA: GEMMA3_CHAT_TEMPLATE}
END_OF_TURN = {GEMMA: "<end_of_turn>"}


class Server(LiveServer):
    """The live server with this file's settings (float32, short context, small KV cache)."""

    def __init__(self, *args: str) -> None:
        super().__init__(*SERVER_ARGS, *args)

    def metrics(self, name: str) -> dict[str, float]:
        """One metric's value per model label, e.g. metrics("swiftserve_model_loads_total")."""
        text = httpx.get(self.url + "/metrics", timeout=30).text
        pattern = rf'^{re.escape(name)}{{model="([^"]+)"}} (\S+)$'
        return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE)}

    def greedy_chat(self, model: str, messages: list[dict]) -> httpx.Response:
        # min_tokens = max_tokens: exactly NUM_NEW tokens, eos masked until then, as hf_greedy does
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": NUM_NEW,
                "min_tokens": NUM_NEW}  # fmt: skip
        return httpx.post(self.url + "/v1/chat/completions", json=body, timeout=300)

    def embed_texts(self, texts: str | list[str]) -> httpx.Response:
        return httpx.post(self.url + "/v1/embeddings", json={"model": EMBED, "input": texts}, timeout=300)

    def wait_kv_free(self, timeout: float = 10.0) -> list[str]:
        """Until every resident chat model runs nothing, queues nothing and has every KV block free
        (prefix-cached blocks count as free); returns those models."""
        deadline = time.monotonic() + timeout
        while True:
            state = {
                name: self.metrics(name)
                for name in (
                    "swiftserve_num_requests_running",
                    "swiftserve_num_requests_waiting",
                    "swiftserve_kv_cache_free_blocks",
                    "swiftserve_kv_cache_total_blocks",
                )
            }
            chat = [m for m in state["swiftserve_kv_cache_total_blocks"] if m in CHAT_MODELS]
            busy = [m for m in chat if state["swiftserve_num_requests_running"][m]]
            busy += [m for m in chat if state["swiftserve_num_requests_waiting"][m]]
            leaked = {
                m: state["swiftserve_kv_cache_total_blocks"][m] - state["swiftserve_kv_cache_free_blocks"][m]
                for m in chat
            }
            if not busy and not any(leaked.values()):
                return chat
            assert time.monotonic() < deadline, f"KV blocks still held (busy {busy}, used {leaked})"
            time.sleep(0.1)


class StatePoller:
    """Snapshots of GET /v1/models every 50 ms in a thread, while the requests run."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.snapshots: list[dict[str, str]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.snapshots.append(self.server.states())
                self._stop.wait(0.05)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread by __exit__
            self.error = exc

    def __enter__(self) -> StatePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError("polling /v1/models failed") from self.error
        self.snapshots.append(self.server.states())

    def history(self, model: str) -> list[str]:
        """The model's states in order, repeats collapsed."""
        states = [s[model] for s in self.snapshots]
        return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


@pytest.fixture(scope="session")
def gemma_dir():
    from swiftserve.loader import resolve_model

    return resolve_model(GEMMA)


@pytest.fixture(scope="module")
def model_dirs(smollm_dir, gemma_dir, minilm_dir):
    return {SMOL: smollm_dir, GEMMA: gemma_dir, EMBED: minilm_dir}


@pytest.fixture(scope="module")
def chat_reference(hf_greedy, gguf_readings) -> dict[str, list[tuple[int, str]]]:
    """Per chat model and conversation: (prompt tokens, text of transformers' NUM_NEW greedy tokens),
    each model alone in float32 as transformers reads it from the original GGUF file (not from the
    folder the server loads), on the prompt its chat template makes."""
    reference = {}
    for name in CHAT_MODELS:
        gguf = source_gguf(name, progress=False)
        tok, model = gguf_readings.tokenizer(gguf), gguf_readings.model(gguf)
        extra_stops = [tok.convert_tokens_to_ids(END_OF_TURN[name])] if name in END_OF_TURN else []
        model.generation_config.eos_token_id = [tok.eos_token_id, *extra_stops]
        prompts = [
            list(
                tok.apply_chat_template(
                    c,
                    chat_template=CHAT_TEMPLATES.get(name),  # None: the GGUF's own
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                )
            )
            for c in CONVERSATIONS
        ]
        outputs = hf_greedy(model, prompts, NUM_NEW)
        texts = [tok.decode(out, skip_special_tokens=True) for out in outputs]
        reference[name] = [(len(p), text) for p, text in zip(prompts, texts, strict=True)]
    return reference


@pytest.fixture(scope="module")
def embed_reference(minilm_dir) -> np.ndarray:
    import sentence_transformers

    return sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)


def _budget(model_dirs) -> int:
    """Room for Gemma (the largest) with MiniLM and 64 MiB of extra KV, never for both chat
    models: their footprints (weights + one max_model_len sequence of KV) as the server counts them."""
    from swiftserve.engine.footprint import chat_footprint, encoder_footprint
    from swiftserve.loader import load_config

    def chat(name: str) -> int:
        folder = model_dirs[name]
        fp = chat_footprint(folder, load_config(folder), torch.float32, BLOCK_SIZE, MAX_MODEL_LEN)
        return fp.weight_bytes + fp.kv_floor_blocks * fp.kv_block_bytes

    smol, gemma, embed = chat(SMOL), chat(GEMMA), encoder_footprint(model_dirs[EMBED], torch.float32)
    budget = gemma + embed.weight_bytes + 64 * 2**20
    assert max(smol, gemma) <= budget < smol + gemma, (smol, gemma, budget)
    return budget


def _fire(server: Server, chats: list[tuple[str, int]], embeds: list[list[int]]) -> tuple[list, list]:
    """All requests at once: chats are (model, conversation index), embeds lists of TEXTS indices."""
    with concurrent.futures.ThreadPoolExecutor(len(chats) + len(embeds)) as pool:
        chat_jobs = [pool.submit(server.greedy_chat, m, CONVERSATIONS[i]) for m, i in chats]
        embed_jobs = [pool.submit(server.embed_texts, [TEXTS[i] for i in ids]) for ids in embeds]
        return [j.result() for j in chat_jobs], [j.result() for j in embed_jobs]


def _check_answers(chats, chat_replies, embeds, embed_replies, chat_reference, embed_reference) -> None:
    for (model, i), reply in zip(chats, chat_replies, strict=True):
        assert reply.status_code == 200, (model, reply.text)
        body = reply.json()
        prompt_tokens, text = chat_reference[model][i]
        assert body["model"] == model
        assert body["choices"][0]["message"]["content"] == text, (model, i)
        assert body["choices"][0]["finish_reason"] == "length"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": NUM_NEW,
                 "total_tokens": prompt_tokens + NUM_NEW}  # fmt: skip
        assert body["usage"] == usage, (model, i)
    for ids, reply in zip(embeds, embed_replies, strict=True):
        assert reply.status_code == 200, reply.text
        data = sorted(reply.json()["data"], key=lambda d: d["index"])
        ours = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        want = embed_reference[ids]
        cosine = (ours * want).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(want, axis=1)
        assert cosine.min() > 0.9999, cosine
        np.testing.assert_allclose(ours, want, rtol=0, atol=1e-4)


def test_concurrent_requests_to_three_resident_models(model_dirs, chat_reference, embed_reference):
    server = Server("--models", ",".join((SMOL, GEMMA, EMBED)))
    try:
        assert server.states() == {SMOL: "resident", GEMMA: "resident", EMBED: "resident"}
        chats = [(m, i) for i in range(len(CONVERSATIONS)) for m in CHAT_MODELS]
        embeds = [[0, 1, 2], [1], [2, 0]]
        chat_replies, embed_replies = _fire(server, chats, embeds)
        _check_answers(chats, chat_replies, embeds, embed_replies, chat_reference, embed_reference)
        assert sorted(server.wait_kv_free()) == sorted(CHAT_MODELS)  # both checked: no leaked blocks
        assert set(server.metrics("swiftserve_model_unloads_total").values()) == {0}
    finally:
        server.stop()


def test_a_budget_short_of_all_three_evicts_reloads_and_answers_everyone(
    model_dirs, chat_reference, embed_reference
):
    budget = _budget(model_dirs)
    models = ",".join((SMOL, GEMMA, EMBED))
    server = Server("--on-demand", models, "--memory-budget", str(budget), "--idle-timeout", "10m")
    try:
        assert server.states() == {SMOL: "cold", GEMMA: "cold", EMBED: "cold"}
        resident_after_round = []
        with StatePoller(server) as poller:
            # Each round needs both chat models: whichever is not resident after round 1 was evicted
            # in it (it answered), so round 2 loads it again.
            for i in range(len(CONVERSATIONS)):
                chats = [(SMOL, i), (GEMMA, i)]
                embeds = [[0, 1, 2], [i]]
                chat_replies, embed_replies = _fire(server, chats, embeds)
                _check_answers(chats, chat_replies, embeds, embed_replies, chat_reference, embed_reference)
                resident_after_round.append(server.wait_kv_free())  # no leaked blocks in who is left
        for snapshot in poller.snapshots:  # the ledger never holds both chat models at once
            held = [m for m in CHAT_MODELS if snapshot[m] in ("resident", "unloading")]
            assert len(held) <= 1, snapshot
        loads = server.metrics("swiftserve_model_loads_total")
        unloads = server.metrics("swiftserve_model_unloads_total")
        assert all(loads[m] >= 1 for m in CHAT_MODELS), loads
        assert sum(loads[m] for m in CHAT_MODELS) >= 3, loads  # one load each, one reload at least
        assert sum(unloads[m] for m in CHAT_MODELS) >= 2, unloads
        reloaded = [m for m in CHAT_MODELS if loads[m] >= 2]
        assert reloaded and all(unloads[m] >= 1 for m in reloaded), (loads, unloads)
        for model in reloaded:  # seen resident, then evicted, then loaded again
            history = poller.history(model)
            assert "resident" in history, history
            after = history[history.index("resident") :]
            assert "cold" in after and "resident" in after[after.index("cold") :], history
        final = server.states()
        for model in CHAT_MODELS:  # every load is still resident or was unloaded since
            assert loads[model] - unloads[model] == (final[model] == "resident"), (loads, unloads, final)
        held = [m for m in CHAT_MODELS if final[m] == "resident"]
        assert len(held) == 1 and resident_after_round[-1] == held, (final, resident_after_round)
        total = sum(server.metrics("swiftserve_model_resident_bytes").values())
        assert 0 < total <= budget, (total, budget)
    finally:
        server.stop()
