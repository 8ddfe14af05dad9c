"""Each family's tool-call format without a model: the prompt, the history, parsing with exact
values, and each grammar (forced and `auto`) checked with llguidance on SmolLM2's tokenizer: what
it accepts, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from swiftserve.router.tool_format import Tool
from swiftserve.router.tool_formats import FORMATS, family_of
from swiftserve.router.tool_grammar import auto_constraint, forced_constraint

GEMMA, LLAMA, TAGGED = FORMATS["gemma3"], FORMATS["llama3_json"], FORMATS["tagged_json"]
WEATHER = Tool(
    "get_weather",
    "The weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
ADD = Tool(
    "add", None, {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
)
TOKENIZER = Path.home() / ".cache/swiftserve/models/smollm2-135m-instruct/tokenizer.json"


def test_family_by_architecture_and_template() -> None:
    assert family_of("gemma3_text", "<start_of_turn>") == "gemma3"
    assert family_of("llama", "{% for m in messages %}<|im_start|>{% endfor %}") == "tagged_json"
    assert family_of("llama", "{% if tools %}<|start_header_id|>{% endif %}") == "llama3_json"
    assert family_of(None, None) == "tagged_json"


def test_gemma_prompt_history_and_parse() -> None:
    prompt = GEMMA.prompt([{"role": "user", "content": "hi"}], [ADD])
    system = prompt.messages[0]
    assert system["role"] == "system" and prompt.template_kwargs == {}
    assert system["content"].endswith(
        '{"name": "add", "description": "", "parameters": ' + json.dumps(ADD.parameters) + "}"
    )
    assert "```tool_code\n[func_name1(" in system["content"]
    message = GEMMA.assistant_message(None, [("add", '{"a": 1, "b": "x\\"y"}')])
    assert message == {"role": "assistant", "content": '```tool_code\n[add(a=1, b="x\\"y")]\n```'}
    assert GEMMA.tool_result("3") == {"role": "user", "content": "```tool_output\n3\n```"}
    content, calls = GEMMA.parse(
        'Sure.```tool_code\n[add(a=1, b=true), get_weather(city="Paris", unit=None)]\n```'
    )
    assert content == "Sure."
    assert [(c.name, c.arguments) for c in calls] == [
        ("add", '{"a": 1, "b": true}'),
        ("get_weather", '{"city": "Paris", "unit": null}'),
    ]
    assert [(c.name, c.arguments) for c in GEMMA.parse('[f(x={"k": [1, false]})]')[1]] == [
        ("f", '{"x": {"k": [1, false]}}')
    ]


@pytest.mark.parametrize(
    "text",
    [
        "no calls",
        "```tool_code\n[add(1, 2)]\n```",
        "```tool_code\n[add(a=__import__('os'))]\n```",
        "[a.b(x=1)]",
        "[f(**k)]",
    ],
)
def test_gemma_parse_refuses_anything_but_literal_keyword_calls(text) -> None:
    assert GEMMA.parse(text) == (text, [])


def test_llama_prompt_history_and_parse() -> None:
    prompt = LLAMA.prompt([{"role": "user", "content": "hi"}], [ADD])
    assert prompt.messages == [{"role": "user", "content": "hi"}]
    assert prompt.template_kwargs == {
        "tools": [
            {"type": "function", "function": {"name": "add", "description": "", "parameters": ADD.parameters}}
        ]
    }
    assert LLAMA.assistant_message(None, [("add", '{"a": 1}')]) == {
        "role": "assistant",
        "content": '{"name": "add", "parameters": {"a": 1}}',
    }
    assert LLAMA.tool_result("3") == {"role": "tool", "content": "3"}
    content, calls = LLAMA.parse('Calling {"name": "add", "parameters": {"a": 1, "b": 2}}')
    assert content == "Calling" and [(c.name, c.arguments) for c in calls] == [("add", '{"a": 1, "b": 2}')]
    assert LLAMA.parse('{"a": 1}') == ('{"a": 1}', [])


def test_forced_tagged_json_grammar_is_todays() -> None:
    grammar = forced_constraint(TAGGED, [ADD], parallel=True).grammar
    assert grammar is not None and grammar.startswith(
        'start: "<tool_call>" calls "</tool_call>"\ncalls: %json {'
    )


def _accepts(grammar: str, text: str) -> bool:
    llg = pytest.importorskip("llguidance")
    if not TOKENIZER.exists():
        pytest.skip("SmolLM2 is not prepared")
    tokenizer = llg.LLTokenizer(TOKENIZER.read_text())
    matcher = llg.LLMatcher(tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return all(matcher.consume_token(t) for t in tokenizer.tokenize_str(text)) and matcher.is_accepting()


GEMMA_CALL = '```tool_code\n[get_weather(city="Paris", days=3), add(b=2)]\n```'


@pytest.mark.parametrize(
    ("fmt", "text", "forced", "auto"),
    [
        (GEMMA, GEMMA_CALL, True, True),
        (GEMMA, "Sunny. ```tool_code\n[add(a=1, b=2)]\n```", False, True),
        (GEMMA, '```tool_code\n[get_weather(unit="C")]\n```', False, False),  # city is required
        (GEMMA, "```tool_code\n[add(c=1)]\n```", False, False),
        (GEMMA, "```tool_code\n[add(a=1, a=1)]\n```", False, False),
        (GEMMA, "Just text, `code` and ``` fences.", False, True),
        (LLAMA, '{"name": "add", "parameters": {"a": 1, "b": 2}}', True, True),
        (LLAMA, '{"name": "add", "parameters": {"a": "x"}}', False, False),
        (LLAMA, 'Text {"x": 1}', False, True),
        (TAGGED, 'Hi <tool_call>[{"name": "add", "arguments": {"a": 1}}]</tool_call>', False, True),
        (TAGGED, '<tool_call>[{"name": "nope", "arguments": {}}]</tool_call>', False, False),
        (TAGGED, "a < b <tool x", False, True),
    ],
)
def test_forced_and_auto_grammars(fmt, text, forced, auto) -> None:
    tools = [WEATHER, ADD]
    assert _accepts(forced_constraint(fmt, tools, parallel=True).grammar, text) == forced
    assert _accepts(auto_constraint(fmt, tools, parallel=True).grammar, text) == auto
