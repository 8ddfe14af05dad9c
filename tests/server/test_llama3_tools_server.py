"""Llama 3's JSON tool calls end to end: a Llama-3.2-shaped model with random weights
(load_format="dummy") and Llama 3's real tokenizer and chat template (tests/server/llama3_dummy.py),
served by the real app and called with the unchanged openai SDK. The grammar alone makes random
weights write a valid call: `required` and a named function, streamed and not, parse into
tool_calls whose arguments validate; a history of a call and its result renders through Meta's
template, the result in an `ipython` turn."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router

from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.loader import load_tokenizer
from swiftserve.server.app import App

from .llama3_dummy import llama3_dummy_dir, missing_source
from .test_tools_server import ASK, SCHEMAS, TOOLS, WEATHER
from .test_tools_server import WEATHER_CHOICE as NAMED
from .thread_server import ThreadServer

pytest.importorskip("llguidance")
pytest.importorskip("transformers", reason="transformers converts Llama 3's tiktoken file")
if missing_source() is not None:
    pytest.skip(
        f"Llama 3's tokenizer or template is not installed: {missing_source()}", allow_module_level=True
    )
pytestmark = pytest.mark.slow
MODEL = "llama3-dummy"


@pytest.fixture(scope="module")
def client():
    executor = DeviceExecutor("llama3")
    executor.start()
    config = EngineConfig(
        model=str(llama3_dummy_dir()),
        load_format="dummy",
        dtype="float32",
        max_model_len=1024,
        seed=0,
    )
    router = Router(ModelPool(10**10, reap_interval_s=3600))
    router.add(LocalChatModel(MODEL, config, executor), "pinned")
    try:
        with ThreadServer(App(router, max_body_bytes=1 << 20)) as server:
            yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=600)
    finally:
        executor.stop()


def _check(calls, names: set[str]) -> None:
    assert calls and len(calls) == 1  # Llama 3's templates hold one call per reply
    assert calls[0].id.startswith("call_") and calls[0].function.name in names
    jsonschema.validate(json.loads(calls[0].function.arguments), SCHEMAS[calls[0].function.name])


@pytest.mark.parametrize(
    ("choice", "names"), [("required", {"get_weather", "add"}), (NAMED, {"get_weather"})]
)
def test_forced_call_parses_into_tool_calls(client, choice, names) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice=choice, temperature=0, max_tokens=80
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    _check(reply.choices[0].message.tool_calls, names)


def test_streamed_named_call(client) -> None:
    with client.beta.chat.completions.stream(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice=NAMED, temperature=0, max_tokens=80
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    _check(final.choices[0].message.tool_calls, {"get_weather"})


def test_history_of_a_call_and_its_result_renders_through_the_template(client) -> None:
    """The served prompt (its token ids, from prompt_logprobs) holds the assistant's call as
    Llama 3's JSON and the result as an ipython turn."""
    arguments = '{"city": "Paris"}'
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=history,
        tools=TOOLS,
        temperature=0,
        max_tokens=4,
        extra_body={"prompt_logprobs": 0},
    )
    ids = [int(next(iter(entry))) for entry in reply.model_extra["prompt_logprobs"][1:]]
    prompt = load_tokenizer(llama3_dummy_dir()).decode(ids, skip_special_tokens=False)
    assert "Environment: ipython" in prompt and '"name": "get_weather"' in prompt  # the tools, rendered
    assert '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": ' in prompt
    # Meta's template writes a result through `tojson` (a string is `iterable` in Jinja): quoted.
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"18 C and sunny"<|eot_id|>' in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
