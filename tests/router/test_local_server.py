"""`swiftserve.Server` in process on the real models: greedy chat equals the offline `LLM`'s,
streaming equals the whole reply, completions, embeddings from an on-demand model, states,
load / unload, and the router's typed errors for unknown models, long contexts and bad params."""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest
from swiftserve.router import errors

import swiftserve

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
MAX_MODEL_LEN = 512
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Count to five."}],
]


class Running:
    """A started Server and the event loop it lives on (module-scoped: the models load once)."""

    def __init__(self, server: swiftserve.Server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.run(server.__aenter__())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.server.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def running(smollm_dir, minilm_dir):
    server = swiftserve.Server(
        models=[CHAT],
        on_demand=[EMBED],
        idle_timeout="60s",
        dtype="float32",  # greedy tokens equal run to run (README, Reproducibility)
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory="64MiB",
    )
    running = Running(server)
    yield running
    running.close()


def test_the_startup_heap_is_frozen_while_the_server_runs(running):
    # An unload's collection walks only what was made since start (engine/memory.py): ~0.15 s on
    # the event loop per unload otherwise.
    assert gc.get_freeze_count() > 1000


def test_greedy_chat_equals_the_offline_llm(running):
    llm = swiftserve.LLM(CHAT, max_model_len=MAX_MODEL_LEN, kv_cache_memory=64 * 2**20, dtype="float32")
    params = swiftserve.SamplingParams(max_tokens=16, temperature=0)
    expected = [llm.chat(c, params)[0] for c in CONVERSATIONS]
    for messages, want in zip(CONVERSATIONS, expected, strict=True):
        got = running.run(running.server.chat(CHAT, messages, max_tokens=16, temperature=0))
        assert got.text == want.outputs[0].text
        assert got.choices[0].token_ids == want.outputs[0].token_ids
        assert got.prompt_token_ids == [want.prompt_token_ids]
        assert got.usage.prompt_tokens == len(want.prompt_token_ids)
        assert got.usage.completion_tokens == len(want.outputs[0].token_ids)
        assert got.choices[0].finish_reason in ("stop", "length")


def test_streamed_deltas_add_up_to_the_reply(running):
    async def go():
        s = running.server
        whole = await s.chat(CHAT, CONVERSATIONS[0], max_tokens=12, temperature=0)
        stream = await s.open_chat(CHAT, CONVERSATIONS[0], max_tokens=12, temperature=0)
        steps = [step async for step in stream]
        return whole, steps

    whole, steps = running.run(go())
    assert "".join(d.text for step in steps for d in step.deltas) == whole.text
    assert steps[-1].usage == whole.usage
    assert [d.finish_reason for step in steps for d in step.deltas if d.finish_reason] == [
        whole.choices[0].finish_reason
    ]


def test_completions_of_text_and_token_ids(running):
    s = running.server
    text = running.run(s.complete(CHAT, "The capital of France is", max_tokens=6, temperature=0))
    ids = running.run(s.complete(CHAT, text.prompt_token_ids[0], max_tokens=6, temperature=0))
    assert ids.text == text.text and text.text
    two = running.run(s.complete(CHAT, ["Hello", "One, two,"], max_tokens=3, n=2, seed=1))
    assert [c.prompt_index for c in two.choices] == [0, 0, 1, 1]


def test_on_demand_embeddings_and_model_states(running):
    s = running.server
    states = {m.name: (m.kind, m.policy) for m in s.models()}
    assert states == {CHAT: ("chat", "pinned"), EMBED: ("embedding", "on-demand")}
    assert s.router.info(CHAT).state == "resident"
    result = running.run(s.embed(EMBED, ["The cat sits on the mat.", "hello"]))
    vectors = np.asarray(result.embeddings)
    assert vectors.shape == (2, 384) and result.num_prompt_tokens > 0
    assert s.router.info(EMBED).state == "resident"
    assert running.run(s.unload(EMBED)) is True
    assert s.router.info(EMBED).state == "cold"
    running.run(s.load(EMBED))
    assert s.router.info(EMBED).state == "resident"
    with pytest.raises(errors.ModelPinnedError):
        running.run(s.unload(CHAT))


def test_typed_errors(running):
    s = running.server
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(errors.ModelNotFoundError):
        running.run(s.chat("no-such-model", user))
    with pytest.raises(errors.WrongKindError):
        running.run(s.embed(CHAT, ["x"]))
    with pytest.raises(errors.ContextLengthExceededError) as info:
        running.run(s.chat(CHAT, user, max_tokens=MAX_MODEL_LEN))
    assert info.value.max_model_len == MAX_MODEL_LEN and info.value.param == "max_tokens"
    with pytest.raises(errors.ContextLengthExceededError) as info:
        running.run(s.chat(CHAT, [{"role": "user", "content": "x " * 2000}]))
    assert info.value.param == "messages"
    with pytest.raises(errors.InvalidParameterError) as info:
        running.run(s.chat(CHAT, user, temperature=-1))
    assert info.value.param == "temperature"
    with pytest.raises(errors.InvalidParameterError) as info:
        running.run(s.complete(CHAT, [10**9], max_tokens=2))  # not a token id of this vocabulary
    # the server keeps serving after all of them
    assert running.run(s.chat(CHAT, user, max_tokens=2, temperature=0)).usage.completion_tokens >= 1


def test_a_config_file_is_the_clis(tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text(
        f"memory_budget: 3GiB\nmodels:\n  - name: chat\n    source: {CHAT}\n    policy: on-demand\n"
    )
    server = swiftserve.Server.from_config(path, max_model_len=256)
    assert server.config.budget_bytes() == 3 * 2**30
    assert [(m.name, m.policy) for m in server.config.models] == [("chat", "on-demand")]
    with pytest.raises(ValueError, match="not both"):
        swiftserve.Server(models=[CHAT], config_file=path)
