"""Tool calling on the real server and SmolLM2 through the openai SDK: tool_choice required and a
named function, streamed and not (accumulated as the SDK's stream helper does), auto, none, a
multi-turn conversation (call, tool result, answer), and bad tool requests answered 400."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from .live_server import CHAT, Server

pytest.importorskip("llguidance")
pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server():
    live = Server("--models", CHAT, "--max-model-len", "2048", "--kv-cache-memory", "64MiB")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)


def _check_calls(calls, names: set[str]) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({c.id for c in calls}) == len(calls)


@pytest.mark.parametrize("sampled", [False, True])
def test_required_and_named_calls(client, sampled) -> None:
    extra = {"temperature": 0.8, "seed": 4} if sampled else {"temperature": 0}
    for choice, names in (("required", {"get_weather", "add"}), (WEATHER_CHOICE, {"get_weather"})):
        reply = client.chat.completions.create(
            model=CHAT, messages=ASK, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False, **extra
        )
        message = reply.choices[0].message
        assert reply.choices[0].finish_reason == "tool_calls", message
        assert message.content is None and len(message.tool_calls) == 1
        _check_calls(message.tool_calls, names)


WEATHER_CHOICE = {"type": "function", "function": {"name": "get_weather"}}


def test_streamed_calls_accumulate_as_the_sdk_does(client) -> None:
    with client.beta.chat.completions.stream(
        model=CHAT, messages=ASK, tools=TOOLS, tool_choice=WEATHER_CHOICE, temperature=0
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    _check_calls(choice.message.tool_calls, {"get_weather"})
    # The same request not streamed: the same call, arguments exactly as generated.
    whole = client.chat.completions.create(
        model=CHAT, messages=ASK, tools=TOOLS, tool_choice=WEATHER_CHOICE, temperature=0
    )
    assert (
        whole.choices[0].message.tool_calls[0].function.arguments
        == choice.message.tool_calls[0].function.arguments
    )


def test_raw_stream_sends_name_and_id_once_then_fragments(server) -> None:
    body = {
        "model": CHAT,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "stream": True,
    }
    deltas, finish = [], None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    deltas += choice["delta"].get("tool_calls", [])
                    finish = choice["finish_reason"] or finish
    assert finish == "tool_calls"
    firsts = [d for d in deltas if "id" in d]
    assert len(firsts) >= 1 and all("name" in d["function"] for d in firsts)
    assert all("name" not in d["function"] and "id" not in d for d in deltas if "id" not in d)
    assert len(deltas) > len(firsts)  # the arguments came in several fragments
    arguments = "".join(d["function"].get("arguments", "") for d in deltas if d["index"] == 0)
    jsonschema.validate(json.loads(arguments), SCHEMAS[firsts[0]["function"]["name"]])


def test_multi_turn_call_result_answer(client) -> None:
    first = client.chat.completions.create(
        model=CHAT, messages=ASK, tools=TOOLS, tool_choice=WEATHER_CHOICE, temperature=0
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    answer = client.chat.completions.create(
        model=CHAT, messages=history, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40
    )
    message = answer.choices[0].message
    assert message.content and not message.tool_calls
    assert answer.choices[0].finish_reason in ("stop", "length")
    # the call and its result reached the prompt: it is longer than the question alone
    alone = client.chat.completions.create(
        model=CHAT, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1
    )
    call_text = len(call.function.arguments) // 4 + len('{"temperature": 21, "sky": "sunny"}') // 4
    assert answer.usage.prompt_tokens > alone.usage.prompt_tokens + call_text


def test_auto_leaves_free_text_free(client) -> None:
    reply = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Say hello."}],
        tools=TOOLS,
        tool_choice="auto",
        temperature=0,
        max_tokens=20,
    )
    choice = reply.choices[0]
    if choice.message.tool_calls:  # the model chose to call: then it is a well-formed call
        assert choice.finish_reason == "tool_calls"
        _check_calls(choice.message.tool_calls, {"get_weather", "add"})
    else:
        assert choice.message.content and choice.finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": TOOLS}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strng"}}}],
                "tool_choice": "required",
            },
            "tools",
        ),
        ({"tools": TOOLS, "tool_choice": "required", "guided_regex": "a"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ],
)
def test_bad_tool_requests_are_400(server, body, param) -> None:
    request = {"model": CHAT, "messages": ASK, "max_tokens": 8, **body}
    response = httpx.post(server.url + "/v1/chat/completions", json=request, timeout=120)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text
