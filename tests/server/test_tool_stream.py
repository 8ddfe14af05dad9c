"""Tool calls in the SmolLM2 format, without a model: the prompt, the history, the forced-call
grammar's text parsed, and a streamed reply cut anywhere gives the same calls and arguments."""

from __future__ import annotations

import json

import pytest
from swiftserve.router import tool_format
from swiftserve.router.tool_format import Tool, parse_calls

from swiftserve.server.tool_stream import ToolCallStream, json_value_end, scan_calls

REPLY = (
    '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris \\"Lutetia\\" {x}", "days": [1, 2]}}, '
    '{"name": "add", "arguments": {"a": 1, "b": {"c": []}}}]</tool_call>'
)
CALLS = [
    ("get_weather", '{"city": "Paris \\"Lutetia\\" {x}", "days": [1, 2]}'),
    ("add", '{"a": 1, "b": {"c": []}}'),
]


def test_scan_reads_names_and_exact_arguments() -> None:
    assert scan_calls(REPLY) == CALLS
    assert [json.loads(a) for _, a in scan_calls(REPLY)] == [json.loads(a) for _, a in CALLS]
    assert json_value_end('{"a": "}"}', 0) == 10
    assert json_value_end('{"a": [1, 2', 0) is None


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50])
def test_a_forced_stream_cut_anywhere_sends_each_name_once_and_all_arguments(step) -> None:
    stream = ToolCallStream(is_forced=True)
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for start in range(0, len(REPLY), step):
        piece = stream.feed(REPLY[start : start + step], start + step >= len(REPLY))
        assert piece.content == ""
        for call in piece.calls:
            if call.id is not None:
                assert call.index not in ids and call.name is not None
                ids[call.index], names[call.index] = call.id, call.name
            else:
                assert call.name is None
            arguments[call.index] = arguments.get(call.index, "") + call.arguments
    assert [(names[i], arguments[i]) for i in sorted(names)] == CALLS
    assert len(set(ids.values())) == 2 and stream.made_calls


def test_auto_streams_free_text_as_content_and_parses_calls_at_the_end() -> None:
    free = ToolCallStream(is_forced=False)
    pieces = [free.feed(t, False) for t in ("<to", "day is sunny")] + [free.feed("", True)]
    assert "".join(p.content for p in pieces) == "<today is sunny" and not free.made_calls
    auto = ToolCallStream(is_forced=False)
    held = [auto.feed(REPLY[i : i + 5], False) for i in range(0, len(REPLY), 5)]
    assert all(not p.content and not p.calls for p in held)
    last = auto.feed("", True)
    assert [(c.name, json.loads(c.arguments)) for c in last.calls] == [(n, json.loads(a)) for n, a in CALLS]
    broken = ToolCallStream(is_forced=False)
    broken.feed("<tool_call>[{oops", False)
    assert broken.feed("", True).content == "<tool_call>[{oops" and not broken.made_calls


def test_parse_calls_and_the_history_round_trip() -> None:
    content, calls = parse_calls("Let me check. " + REPLY)
    assert content == "Let me check. " and [c.name for c in calls] == ["get_weather", "add"]
    assert parse_calls("no calls here") == ("no calls here", [])
    assert parse_calls("<tool_call>[not json]</tool_call>")[1] == []
    text = tool_format.assistant_text(None, CALLS)
    assert [(c.name, json.loads(c.arguments)) for c in parse_calls(text)[1]] == [
        (n, json.loads(a)) for n, a in CALLS
    ]
    messages = tool_format.with_tools([{"role": "user", "content": "hi"}], [Tool("add", "adds", None)])
    assert messages[0]["role"] == "system" and '"name": "add"' in messages[0]["content"]
    assert tool_format.tool_result("42") == {
        "role": "user",
        "content": "<tool_response>\n42\n</tool_response>",
    }


@pytest.mark.parametrize("forced", [True, False], ids=["grammar", "parsed-at-end"])
@pytest.mark.parametrize("step", [1, 3, 7, 50])
def test_text_before_the_tag_streams_as_content_and_the_calls_after_it(forced, step) -> None:
    """`auto`: words first, then a call; cut anywhere, the content is the words and the calls are
    the reply's, as parse_calls reads the whole reply."""
    reply = "Let me check <to be sure>. " + REPLY
    stream = ToolCallStream(is_forced=forced)
    content, names, arguments = "", {}, {}
    for start in range(0, len(reply), step):
        piece = stream.feed(reply[start : start + step], start + step >= len(reply))
        content += piece.content
        for call in piece.calls:
            if call.id is not None:
                names[call.index] = call.name
            arguments[call.index] = arguments.get(call.index, "") + call.arguments
    assert content == "Let me check <to be sure>. " == parse_calls(reply)[0]
    assert [(names[i], arguments[i]) for i in sorted(names)] == CALLS and stream.made_calls


def test_a_tail_that_may_open_a_call_waits_and_a_broken_call_after_words_is_content() -> None:
    stream = ToolCallStream(is_forced=False)
    assert stream.feed("Sunny. <tool_", False).content == "Sunny. "  # "<tool_" may be the tag
    assert stream.feed("box>", False).content == "<tool_box>"  # it was not
    assert stream.feed(" <tool_call>[{oops", False).content == " "
    assert stream.feed("", True).content == "<tool_call>[{oops" and not stream.made_calls
