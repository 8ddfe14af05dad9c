"""The schema coverage run's forcing on SmolLM2's tokenizer: valid instances accepted token by
token, invalid ones rejected, refusals sorted into unsupported keywords and errors, and a valid
instance in another key order or with 1.0 for 1 blamed on that."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from swiftserve.loader import load_tokenizer
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend

pytest.importorskip("llguidance")
# benchmarks/ is no package on the path (the repository root stays off sys.path): load the file.
_SPEC = importlib.util.spec_from_file_location(
    "schema_forcing", Path(__file__).resolve().parents[2] / "benchmarks" / "schema_forcing.py"
)
assert _SPEC is not None and _SPEC.loader is not None
schema_forcing = importlib.util.module_from_spec(_SPEC)
sys.modules["schema_forcing"] = schema_forcing  # its dataclasses look their module up there
_SPEC.loader.exec_module(schema_forcing)
Forcing, in_schema_order = schema_forcing.Forcing, schema_forcing.in_schema_order
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def forcing(smollm_dir) -> Forcing:
    tokenizer = load_tokenizer(smollm_dir)
    return Forcing(tokenizer, LLGuidanceBackend(tokenizer.tokenizer, 49152, tokenizer.eos_token_ids))


def test_valid_accepted_invalid_rejected(forcing) -> None:
    grammar = forcing.compile(PERSON).grammar
    assert grammar is not None
    assert forcing.accepts(grammar, forcing.encode({"name": "Ada", "age": 36}))
    assert not forcing.accepts(grammar, forcing.encode({"name": "Ada"}))  # age is required
    assert not forcing.accepts(grammar, forcing.encode({"name": "Ada", "age": "36"}))


def test_refusals_name_the_keyword_or_the_error(forcing) -> None:
    unsupported = forcing.compile({"type": "array", "uniqueItems": True})
    assert unsupported.outcome == "unsupported" and unsupported.keywords == ["uniqueItems"]
    error = forcing.compile({"$ref": "http://localhost:1234/remote.json"})
    assert error.outcome == "error" and error.grammar is None and "localhost" in error.message


def test_rejected_valid_instances_are_explained(forcing) -> None:
    grammar = forcing.compile(PERSON).grammar
    assert forcing.why_rejected(PERSON, grammar, {"age": 36, "name": "Ada"}) == "key order"
    assert forcing.why_rejected(PERSON, grammar, {"name": "Ada", "age": 36.0}) == "number form"


def test_schema_order_follows_all_of() -> None:
    schema = {"allOf": [{"properties": {"b": {}}}, {"properties": {"a": {}}}]}
    assert list(in_schema_order({"a": 1, "c": 3, "b": 2}, schema)) == ["b", "a", "c"]
