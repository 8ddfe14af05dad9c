"""Stages that hand JSON on: their constraint from the config file (errors naming the stage),
their replies parsed once, read field by field and printed whole as JSON by later templates."""

from __future__ import annotations

import pytest
from swiftserve.router.config_file import ConfigError, parse_config
from swiftserve.router.errors import StageOutputError
from swiftserve.router.pipeline_json import JsonObject, parse_output, stage_output
from swiftserve.router.pipeline_spec import Message, PipelineError, PipelineSpec, StageSpec
from swiftserve.router.pipeline_templates import Texts, compile_pipeline

from swiftserve.structured_outputs import StructuredOutputs

SCHEMA = StructuredOutputs(json={"type": "object", "properties": {"topic": {"type": "string"}}})
CONFIG = """
models:
  - source: a
pipelines:
  - name: p
    stages:
      - {{id: route, kind: chat, model: a, structured_outputs: {constraint},
         messages: [{{role: user, content: "{{{{ input }}}}"}}]}}
      - {{id: answer, kind: chat, model: a, after: [route],
         messages: [{{role: user, content: "On {{{{ stages.route.topic }}}}: {{{{ input }}}}"}}]}}
"""


def _route(constraint: StructuredOutputs | None = SCHEMA, fan_out: int = 1) -> StageSpec:
    return StageSpec(
        "route", "chat", "a", messages=(Message("user", "{{ input }}"),), fan_out=fan_out,
        structured_outputs=constraint,
    )  # fmt: skip


def test_the_config_file_gives_a_stage_its_constraint():
    schema = "{json: {type: object, properties: {topic: {type: string}}}}"
    route, answer = parse_config(CONFIG.format(constraint=schema)).pipelines[0].stages
    assert route.structured_outputs == SCHEMA and route.parses_json
    assert answer.structured_outputs is None and not answer.parses_json
    (route, _) = parse_config(CONFIG.format(constraint="{choice: [a, b]}")).pipelines[0].stages
    assert route.structured_outputs == StructuredOutputs(choice=("a", "b")) and not route.parses_json


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("{json: [1]}", "the JSON schema must be an object"),
        ("{regex: a, choice: [b]}", "must set exactly one"),
        ("{colour: red}", ".*colour"),
        ("{param: x, regex: a}", "unknown field 'param'"),
    ],
)
def test_a_bad_constraint_is_an_error_at_load_naming_the_stage(constraint, message):
    with pytest.raises(ConfigError, match=r"pipelines\[p\]\.stages\[route\]: structured_outputs: " + message):
        parse_config(CONFIG.format(constraint=constraint))


def test_only_generating_stages_take_a_constraint_and_never_as_a_sampling_field():
    retrieve = StageSpec("route", "retrieve", "e", corpus="c.jsonl", structured_outputs=SCHEMA)
    with pytest.raises(PipelineError, match=r"stages\[route\]: structured_outputs: only chat and completion"):
        PipelineSpec("p", (retrieve,))
    sampled = StageSpec(
        "route", "chat", "a", messages=(Message("user", "x"),), sampling={"structured_outputs": {}}
    )
    with pytest.raises(PipelineError, match=r"stages\[route\]: sampling: set the stage's structured_outputs"):
        PipelineSpec("p", (sampled,))
    with pytest.raises(PipelineError, match="a StructuredOutputs, got dict"):
        PipelineSpec("p", (_route({"json": {}}),))  # type: ignore[arg-type]


def test_replies_are_parsed_and_print_as_compact_json():
    value = parse_output('{"topic": "rivers", "tags": ["a", {"b": 1}], "n": 2.5}', "stop")
    assert value == {"topic": "rivers", "tags": ["a", {"b": 1}], "n": 2.5}
    assert isinstance(value, JsonObject) and isinstance(value["tags"][1], JsonObject)
    assert str(value) == '{"topic": "rivers", "tags": ["a", {"b": 1}], "n": 2.5}'
    assert str(value["tags"]) == '["a", {"b": 1}]'
    assert parse_output('"just a string"', "stop") == "just a string"


def test_a_reply_cut_short_fails_a_stage_that_hands_it_on_but_not_the_final_one():
    with pytest.raises(StageOutputError, match="stopped at max_tokens: raise the stage's max_tokens"):
        parse_output('{"topic": "riv', "length")
    with pytest.raises(StageOutputError, match=r"not complete JSON: 'nope'"):
        stage_output(_route(), [("nope", "stop")])
    assert stage_output(_route(), [('{"topic": "riv', "length")], hands_on=False) == '{"topic": "riv'


def test_a_fan_out_hands_on_a_list_of_values_and_unconstrained_stages_their_text():
    fanned = stage_output(_route(fan_out=2), [('{"topic": "a"}', "stop"), ('{"topic": "b"}', "stop")])
    assert isinstance(fanned, Texts) and fanned == [{"topic": "a"}, {"topic": "b"}]
    assert str(fanned) == '{"topic": "a"}\n\n{"topic": "b"}'
    assert stage_output(_route(None), [('{"topic": "a"}', "stop")]) == '{"topic": "a"}'
    regex = StructuredOutputs(regex="[ab]")
    assert stage_output(_route(regex), [("a", "stop")]) == "a"


def test_later_templates_read_fields_and_print_the_whole_value():
    answer = StageSpec(
        "answer", "chat", "a", ("route",),
        (Message("user", "{{ stages.route.topic }} | {{ stages.route }} | {{ stages.route['n'] + 1 }}"),),
    )  # fmt: skip
    spec = PipelineSpec("p", (_route(), answer))
    route = parse_output('{"topic": "rivers", "n": 1}', "stop")
    context = {"input": "q", "messages": [], "stages": {"route": route}, "i": 0}
    text = compile_pipeline(spec)["answer"].render("messages[0].content", context)
    assert text == 'rivers | {"topic": "rivers", "n": 1} | 2'
