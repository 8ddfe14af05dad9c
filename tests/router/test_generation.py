"""The router's request API on fake models: chat and completions (prompts, n choices, deltas,
usage, finish reasons, context and parameter checks), embed, and the engine's typed errors
coming out as the router's."""

import asyncio

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router

from swiftserve.engine import errors as engine_errors
from swiftserve.engine.served_model import Footprint
from swiftserve.outputs import CompletionOutput, RequestOutput, TokenLogprob


class Tokenizer:
    """One token per character (id = ord); a leading BOS (id 1) with special tokens."""

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]


class EchoChat:
    """Generates the prompt's characters back, one per step; n completions alike."""

    kind = "chat"
    max_model_len = 32
    tokenizer = Tokenizer()

    def __init__(self, name="chat", queue_full=False):
        self.name, self.queue_full = name, queue_full
        self.is_resident = False
        self.prompts, self.closed = [], 0

    def footprint(self):
        return Footprint(weight_bytes=1000, kv_block_bytes=10, kv_floor_blocks=1)

    async def load(self):
        self.is_resident = True

    async def unload(self, *, force: bool = False):
        self.is_resident = False

    def apply_chat_template(self, messages, add_generation_prompt=True):
        if any(m["role"] == "bad" for m in messages):
            raise KeyError("role bad")
        return "".join(f"[{m['content']}]" for m in messages)

    async def generate(self, prompt, params, request_id=None, priority=0):
        if self.queue_full:
            raise engine_errors.QueueFullError("full")
        self.prompts.append((list(prompt), params))
        chars = [chr(t) for t in prompt if t > 1]
        outs = [CompletionOutput(i, "", []) for i in range(params.n)]
        try:
            for step in range(params.max_tokens):
                await asyncio.sleep(0)
                char = chars[step % len(chars)]
                for out in outs:
                    out.text += char
                    out.token_ids = out.token_ids + [ord(char)]
                    if params.logprobs is not None:
                        out.logprobs = (out.logprobs or []) + [TokenLogprob(ord(char), -1.0)]
                    if char in params.stop:
                        out.text, out.finish_reason = out.text[:-1], "stop"
                    elif len(out.token_ids) == params.max_tokens:
                        out.finish_reason = "length"
                copies = [CompletionOutput(**vars(o)) for o in outs]
                finished = all(o.finish_reason for o in outs)
                yield RequestOutput(request_id, None, list(prompt), copies, finished)
                if finished:
                    return
        finally:
            self.closed += 1


class Embedder(EchoChat):
    kind = "embedding"
    dim = 2

    async def embed(self, inputs):
        if self.queue_full:
            raise engine_errors.QueueFullError("full")
        return [[float(len(x)), 0.0] for x in inputs]


def _run(coro_fn, **models):
    async def main():
        router = Router(ModelPool(10**6, reap_interval_s=3600), default_max_tokens=4)
        for model in models.values():
            router.add(model, "on-demand")
        await router.start()
        try:
            return await coro_fn(router)
        finally:
            await router.shutdown()

    return asyncio.run(main())


def test_chat_renders_the_template_and_resolves_max_tokens():
    chat = EchoChat()

    async def go(router):
        result = await router.chat("chat", [{"role": "user", "content": "ab"}], temperature=0)
        assert chat.prompts[0][0] == [ord(c) for c in "[ab]"]  # no BOS: the template holds them
        assert chat.prompts[0][1].max_tokens == 4  # the router's default, the context has room
        assert result.text == "[ab]" and result.choices[0].finish_reason == "length"
        usage = result.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 4, 8)
        long = await router.chat("chat", [{"role": "user", "content": "x" * 27}])
        assert chat.prompts[1][1].max_tokens == 3  # what the context leaves: 32 - 29
        assert len(long.choices[0].token_ids) == 3

    _run(go, chat=chat)


def test_completions_of_several_prompts_with_n_choices_and_stop():
    chat = EchoChat()

    async def go(router):
        result = await router.complete("chat", ["ab", [120, 121]], max_tokens=3, n=2, logprobs=0)
        assert [c.index for c in result.choices] == [0, 1, 2, 3]
        assert [c.prompt_index for c in result.choices] == [0, 0, 1, 1]
        assert [c.text for c in result.choices] == ["aba", "aba", "xyx", "xyx"]
        assert result.prompt_token_ids == [[1, 97, 98], [120, 121]]  # text gets BOS, ids pass as they are
        assert result.usage.prompt_tokens == 5 and result.usage.completion_tokens == 12
        assert [lp.token_id for lp in result.choices[0].logprobs] == [97, 98, 97]
        stopped = await router.complete("chat", "abc", max_tokens=5, stop=["b"])
        assert (stopped.text, stopped.choices[0].finish_reason) == ("a", "stop")

    _run(go, chat=chat)


def test_streaming_yields_deltas_per_step_and_closing_aborts():
    chat = EchoChat()

    async def go(router):
        stream = await router.open_completion("chat", "abc", max_tokens=3)
        steps = [step async for step in stream.steps]
        assert [[d.text for d in s.deltas] for s in steps] == [["a"], ["b"], ["c"]]
        assert [s.usage.completion_tokens for s in steps] == [1, 2, 3]
        assert steps[-1].deltas[0].finish_reason == "length" and steps[0].num_new_tokens == 1
        early = await router.open_chat("chat", [{"role": "user", "content": "hello"}], max_tokens=20)
        first = await early.steps.__anext__()
        assert first.deltas[0].text == "["
        await early.steps.aclose()
        assert chat.closed == 2  # both requests closed on the model: the early one was aborted

    _run(go, chat=chat)


def test_typed_errors():
    chat, embed = EchoChat(), Embedder("embed")

    async def go(router):
        user = [{"role": "user", "content": "hi"}]
        with pytest.raises(errors.ModelNotFoundError):
            await router.chat("nope", user)
        with pytest.raises(errors.WrongKindError):
            await router.chat("embed", user)
        with pytest.raises(errors.ContextLengthExceededError) as info:
            await router.chat("chat", user, max_tokens=40)
        assert (info.value.num_prompt_tokens, info.value.max_tokens, info.value.max_model_len) == (4, 40, 32)
        assert info.value.param == "max_tokens"
        with pytest.raises(errors.ContextLengthExceededError) as info:
            await router.complete("chat", "x" * 40)
        assert info.value.param == "prompt"
        with pytest.raises(errors.InvalidParameterError) as info:
            await router.chat("chat", user, temperature=-1)
        assert info.value.param == "temperature"
        with pytest.raises(errors.InvalidParameterError) as info:
            await router.chat("chat", user, bogus=1)
        assert info.value.param == "sampling"
        with pytest.raises(errors.InvalidParameterError) as info:
            await router.chat("chat", [{"role": "bad", "content": "x"}])
        assert info.value.param == "messages"
        with pytest.raises(errors.InvalidParameterError) as info:
            await router.chat("chat", [])
        assert info.value.param == "messages"
        with pytest.raises(errors.InvalidParameterError) as info:
            await router.complete("chat", [])
        assert info.value.param == "prompt"
        assert await router.embed("embed", ["abc"]) == [[3.0, 0.0]]

    _run(go, chat=chat, embed=embed)


def test_a_full_engine_queue_is_the_routers_queue_full_error():
    async def go(router):
        with pytest.raises(errors.ModelQueueFullError):
            await router.complete("chat", "hi")
        with pytest.raises(errors.ModelQueueFullError):
            await router.embed("embed", ["hi"])

    _run(go, chat=EchoChat(queue_full=True), embed=Embedder("embed", queue_full=True))


class Stalling(EchoChat):
    """One output, then nothing: an engine that would keep the request forever."""

    async def generate(self, prompt, params, request_id=None, priority=0):
        try:
            yield RequestOutput(request_id, None, list(prompt), [CompletionOutput(0, "a", [97])])
            await asyncio.Event().wait()
        finally:
            self.closed += 1


def test_shutdown_ends_the_streams_in_flight_then_unloads():
    async def main():
        model = Stalling()
        router = Router(ModelPool(10**6, reap_interval_s=3600))
        router.add(model, "pinned")
        await router.start()
        stream = await router.open_completion("chat", "hi", max_tokens=8)
        assert (await stream.steps.__anext__()).deltas[0].text == "a"
        waiting = asyncio.ensure_future(stream.steps.__anext__())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(router.shutdown(), 5)
        with pytest.raises(errors.RequestAbortedError):
            await waiting
        assert model.closed == 1 and not model.is_resident  # aborted, released, then unloaded

    asyncio.run(main())
