"""The boolean JSON schemas: `true` allows any JSON value, `false` allows nothing and is refused
when compiled, naming itself; neither is mistaken for an unset field."""

from __future__ import annotations

import pytest

from swiftserve.engine.errors import GrammarError
from swiftserve.engine.grammar_compiler import GrammarCompiler
from swiftserve.loader import load_tokenizer
from swiftserve.model_runner.grammar.interface import GrammarCompileError
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend
from swiftserve.structured_outputs import StructuredOutputs, StructuredOutputsError

pytest.importorskip("llguidance")

FALSE_MESSAGE = "the JSON schema `false` matches nothing: no output satisfies it"


@pytest.fixture(scope="module")
def tokenizer(smollm_dir):
    return load_tokenizer(smollm_dir)


@pytest.fixture(scope="module")
def backend(tokenizer) -> LLGuidanceBackend:
    return LLGuidanceBackend(tokenizer.tokenizer, 49152, tokenizer.eos_token_ids)


@pytest.mark.parametrize("schema", [True, False, "true", "false"])
def test_a_boolean_schema_is_a_json_constraint(schema) -> None:
    spec = StructuredOutputs(json=schema)
    assert spec.kind == "json" and spec.json is (schema in (True, "true"))


def test_boolean_schemas_are_keyed_apart_from_each_other_and_json_object() -> None:
    keys = {StructuredOutputs(json=True).cache_key(), StructuredOutputs(json=False).cache_key()}
    keys.add(StructuredOutputs(json_object=True).cache_key())
    assert len(keys) == 3


def test_still_exactly_one_constraint() -> None:
    with pytest.raises(StructuredOutputsError, match=r"exactly one of .*\['json', 'regex'\]"):
        StructuredOutputs(json=False, regex="a")
    with pytest.raises(StructuredOutputsError, match="must be an object or a boolean"):
        StructuredOutputs(json=0)


@pytest.mark.parametrize("text", ['"hi"', "12", "[1, 2]", '{"a": null}', "true", "null"])
def test_true_accepts_any_json_value(backend, tokenizer, text) -> None:
    matcher = backend.compile(StructuredOutputs(json=True)).new_matcher()
    for token_id in tokenizer.encode(text, add_special_tokens=False):
        assert matcher.accept(token_id), matcher.error()
    assert matcher.accept(tokenizer.eos_token_ids[0]) and matcher.is_finished()


def test_true_rejects_what_is_not_json(backend, tokenizer) -> None:
    matcher = backend.compile(StructuredOutputs(json=True)).new_matcher()
    assert not all(matcher.accept(t) for t in tokenizer.encode("hello", add_special_tokens=False))


def test_false_is_refused_naming_itself(backend) -> None:
    with pytest.raises(GrammarCompileError) as info:
        backend.compile(StructuredOutputs(json=False, param="response_format"))
    assert (info.value.param, str(info.value)) == ("response_format", FALSE_MESSAGE)
    compiler = GrammarCompiler(lambda: backend)
    try:
        with pytest.raises(GrammarError) as error:
            compiler.compile(StructuredOutputs(json="false", param="guided_json"))
        assert (error.value.param, error.value.message) == ("guided_json", FALSE_MESSAGE)
    finally:
        compiler.shutdown()
