"""Structured outputs over HTTP on the real server and SmolLM2, through the openai SDK:
response_format (json_schema, json_object), `parse` with a pydantic model, vLLM's guided_* extra
body and its structured_outputs object, and bad constraints answered 400 naming the problem."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pydantic
import pytest

from .live_server import CHAT, Server

pytest.importorskip("llguidance")
pytestmark = pytest.mark.slow

ARGS = ("--models", CHAT, "--max-model-len", "1024", "--kv-cache-memory", "64MiB")
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Invent a person. Answer in JSON."}]


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=24)
    country: str = pydantic.Field(max_length=24)
    population: int = pydantic.Field(ge=0, le=100_000_000)


@pytest.fixture(scope="module")
def server():
    live = Server(*ARGS)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)


def test_response_format_json_schema_and_json_object(client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for extra in ({"temperature": 0}, {"temperature": 1.0, "seed": 11}):
        reply = client.chat.completions.create(model=CHAT, messages=ASK, response_format=fmt, **extra)
        choice = reply.choices[0]
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    reply = client.chat.completions.create(
        model=CHAT, messages=ASK, response_format={"type": "json_object"}, temperature=0, max_tokens=200
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_parse_with_a_pydantic_model(client) -> None:
    completion = client.beta.chat.completions.parse(
        model=CHAT,
        messages=[{"role": "user", "content": "Tell me about Paris as JSON."}],
        response_format=City,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name


def test_streamed_json_schema_concatenates_to_valid_json(client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    stream = client.chat.completions.create(
        model=CHAT, messages=ASK, response_format=fmt, temperature=0, stream=True
    )
    text, finish = "", None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_vllm_guided_fields_and_structured_outputs(client) -> None:
    def ask(extra_body: dict, **kwargs) -> str:
        reply = client.chat.completions.create(
            model=CHAT, messages=ASK, temperature=0, max_tokens=80, extra_body=extra_body, **kwargs
        )
        assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
        return reply.choices[0].message.content

    jsonschema.validate(json.loads(ask({"guided_json": PERSON})), PERSON)
    assert re.fullmatch(r"[A-Z][a-z]{1,10} [0-9]{2}", ask({"guided_regex": r"[A-Z][a-z]{1,10} [0-9]{2}"}))
    assert ask({"guided_choice": ["alpha", "beta"]}) in ("alpha", "beta")
    assert re.fullmatch("(yes|no)!", ask({"guided_grammar": 'start: ("yes" | "no") "!"'}))
    jsonschema.validate(json.loads(ask({"structured_outputs": {"json": PERSON}})), PERSON)
    assert ask({"structured_outputs": {"choice": ["up", "down"]}}) in ("up", "down")
    # /v1/completions takes them too
    reply = client.completions.create(
        model=CHAT,
        prompt="The answer is",
        max_tokens=10,
        temperature=0,
        extra_body={"guided_choice": ["A", "B"]},
    )
    assert reply.choices[0].text in ("A", "B")


def test_the_schema_true_allows_any_json_value(client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "anything", "schema": True}}
    for extra in ({"response_format": fmt}, {"extra_body": {"guided_json": True}}):
        reply = client.chat.completions.create(
            model=CHAT, messages=ASK, temperature=0, max_tokens=200, **extra
        )
        assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
        json.loads(reply.choices[0].message.content)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"guided_json": {"type": "strng"}}, "guided_json", "strng"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"uniqueItems": 1}},
                }
            },
            "response_format",
            "uniqueItems",
        ),
        ({"guided_regex": "(unclosed"}, "guided_regex", "unclosed"),
        ({"guided_regex": r"a[^\x00-\x{10FFFF}]"}, "guided_regex", "matches nothing"),
        ({"structured_outputs": {"grammar": "start: nowhere"}}, "structured_outputs", "nowhere"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": False}}},
            "response_format",
            "the JSON schema `false` matches nothing",
        ),
        ({"guided_json": False}, "guided_json", "the JSON schema `false` matches nothing"),
    ],
)
def test_bad_constraints_are_400_naming_the_problem(server, body, param, words) -> None:
    request = {"model": CHAT, "messages": ASK, "max_tokens": 8, **body}
    response = httpx.post(server.url + "/v1/chat/completions", json=request, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_nothing_leaks_after_bad_and_good_constraints(server) -> None:
    free = server.chat("Say hi")  # a neighbour of the refused ones above still gets its answer
    assert free.status_code == 200
    assert server.metric(f'swiftserve_kv_cache_usage_ratio{{model="{CHAT}"}}') == 0
    # what the tests above cost, on /metrics: PERSON came back from the cache, six were refused
    # (the second `false` from the cache of failures)
    model = f'{{model="{CHAT}"}}'
    assert server.metric(f"swiftserve_grammar_cache_hits_total{model}") >= 1
    assert server.metric(f"swiftserve_grammar_failures_total{model}") >= 6
    assert server.metric(f"swiftserve_grammar_constrained_rows_total{model}") > 0
    assert server.metric(f"swiftserve_grammar_compile_seconds_total{model}") > 0
    assert server.metric(f'swiftserve_grammar_mask_fill_seconds{{model="{CHAT}",quantile="0.99"}}') > 0


def test_a_compile_past_its_timeout_is_a_400_and_neighbours_go_on() -> None:
    live = Server(*ARGS, "--grammar-compile-timeout", "1ms")
    try:
        request = {"model": CHAT, "messages": ASK, "max_tokens": 8, "guided_json": PERSON}
        for _ in range(2):  # the second is refused from the cache of failures
            response = httpx.post(live.url + "/v1/chat/completions", json=request, timeout=120)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "guided_json" and "timeout of 0.001 s" in error["message"], error
        assert live.chat("Say hi").status_code == 200
    finally:
        live.stop()
