"""Tool calls in each family's format on the real server through the openai SDK: Gemma 3's
pythonic calls (required and a named function, streamed and not), whose arguments validate against
the tool's parameters, and `auto` on SmolLM2 steered to call by its system prompt."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from .live_server import CHAT, Server
from .test_tools_server import SCHEMAS, TOOLS, WEATHER

pytest.importorskip("llguidance")
pytestmark = pytest.mark.slow
GEMMA = "gemma-3-270m"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client():
    live = Server("--models", f"{CHAT},{GEMMA}", "--max-model-len", "1024", "--kv-cache-memory", "64MiB")
    try:
        yield openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=600)
    finally:
        live.stop()


def _check(calls, names: set[str]) -> None:
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize(
    ("choice", "names"), [("required", {"get_weather", "add"}), (NAMED, {"get_weather"})]
)
def test_gemma_forced_calls(client, choice, names) -> None:
    reply = client.chat.completions.create(
        model=GEMMA, messages=ASK, tools=TOOLS, tool_choice=choice, temperature=0, max_tokens=60
    )
    assert reply.choices[0].finish_reason == "tool_calls" and reply.choices[0].message.content is None
    _check(reply.choices[0].message.tool_calls, names)


def test_gemma_streamed_named_call(client) -> None:
    with client.beta.chat.completions.stream(
        model=GEMMA, messages=ASK, tools=[WEATHER], tool_choice=NAMED, temperature=0, max_tokens=60
    ) as stream:
        final = stream.get_final_completion()
    _check(final.choices[0].message.tool_calls, {"get_weather"})


@pytest.mark.xfail(reason="SmolLM2-135M answers in words whatever this system prompt says: not yet steered")
def test_auto_steered_to_call_gives_a_valid_call(client) -> None:
    steer = {
        "role": "system",
        "content": 'Never answer in words. Your reply always starts with <tool_call>[{"name": "get_weather"',
    }
    reply = client.chat.completions.create(
        model=CHAT, messages=[steer, *ASK], tools=TOOLS, tool_choice="auto", temperature=0, max_tokens=60
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    _check(choice.message.tool_calls, {"get_weather", "add"})
