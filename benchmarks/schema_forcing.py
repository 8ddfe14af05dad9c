"""One schema through swiftserve's own path: compile it as a request's `json` constraint would be
(StructuredOutputs, then the llguidance backend, whose refusals are the server's 400s), then force
each instance through a matcher token by token, and say why an instance went the wrong way.

An instance is written as json.dumps writes it (", " and ": ", no other whitespace): exactly the
bounded whitespace our grammars allow by default. It is tokenized by the model's tokenizer and fed
one token at a time; it is accepted when every token is allowed and end of sequence is allowed
after the last (the engine lets a row sample EOS only in an accepting state).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from swiftserve.loader.tokenizer import TokenizerInfo
from swiftserve.model_runner.grammar.interface import CompiledGrammar, GrammarCompileError, GrammarMatcher
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend
from swiftserve.structured_outputs import StructuredOutputs, StructuredOutputsError

# llguidance's words for what it cannot enforce, and the keyword each names.
_UNSUPPORTED = [
    (re.compile(r"Unimplemented keys: \[(.*?)\]"), lambda m: re.findall(r'"([^"]+)"', m.group(1))),
    (re.compile(r"(\w+) constraints are not supported"), lambda m: [m.group(1)]),
    (re.compile(r"min/maxProperties only supported"), lambda m: ["min/maxProperties (optional keys)"]),
    (re.compile(r"Unknown format: (\S+)"), lambda m: [f"format: {m.group(1)}"]),
    (re.compile(r"cannot be enforced: (.*)"), lambda m: [m.group(1)[:60]]),
]


@dataclass
class Compiled:
    """outcome: compiled, unsupported (keywords says which) or error (message says what)."""

    outcome: str
    seconds: float
    grammar: CompiledGrammar | None = None
    keywords: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class Forcing:
    """The model's tokenizer and its backend: what a server for that model would compile with."""

    tokenizer: TokenizerInfo
    backend: LLGuidanceBackend

    def compile(self, schema: Any, flexible: bool = False) -> Compiled:
        start = time.perf_counter()
        try:
            spec = StructuredOutputs(json=schema, whitespace_flexible=flexible, param="response_format")
            grammar = self.backend.compile(spec)
        except (GrammarCompileError, StructuredOutputsError) as exc:
            return _refused(str(exc), time.perf_counter() - start)
        return Compiled("compiled", time.perf_counter() - start, grammar)

    def encode(self, data: Any) -> list[int]:
        return self.tokenizer.encode(serialize(data), add_special_tokens=False)

    def accepts(self, grammar: CompiledGrammar, token_ids: list[int]) -> bool:
        return self.feed(grammar, token_ids).error() is None

    def feed(self, grammar: CompiledGrammar, token_ids: list[int]) -> GrammarMatcher:
        """A matcher after the tokens and end of sequence: in error unless all were allowed."""
        matcher = grammar.new_matcher()
        for token_id in [*token_ids, self.tokenizer.eos_token_ids[0]]:
            if not matcher.accept(token_id):
                break
        return matcher

    def why_rejected(self, schema: Any, grammar: CompiledGrammar, data: Any) -> str:
        """A valid instance was rejected: is it our key order, our whitespace, the tokenization,
        1.0 written where the grammar wants 1, a format the grammar checks, or the grammar's
        reading of the schema?"""
        reordered = in_schema_order(data, schema)
        if list(_keys(reordered)) != list(_keys(data)) and self.accepts(grammar, self.encode(reordered)):
            return "key order"
        as_ints = integral_floats_as_ints(data)
        if serialize(as_ints) != serialize(data) and self.accepts(grammar, self.encode(as_ints)):
            return "number form"
        text = serialize(data)
        if self.accepts(grammar, list(self.backend.tokenizer.tokenize_str(text))):
            return "tokenization"
        flexible = self.compile(schema, flexible=True)
        if flexible.grammar is not None and self.accepts(flexible.grammar, self.encode(data)):
            return "whitespace"
        if '"format"' in json.dumps(schema):
            return "format asserted"  # llguidance checks formats; draft 2020-12 only annotates
        return "schema semantics"


def serialize(data: Any) -> str:
    """Compact as our bounded-whitespace grammar writes JSON; non-ASCII as itself, as a model would."""
    return json.dumps(data, ensure_ascii=False)


def in_schema_order(data: Any, schema: Any, root: Any = None) -> Any:
    """data with each object's keys in the order llguidance writes them: its schema's `properties`
    (merged through allOf / anyOf / oneOf and local $refs, first seen first, or a `const`
    object's order), other keys after. A heuristic: it does not follow every way a key's schema
    can be reached."""
    root = schema if root is None else root
    if isinstance(data, list):
        items = schema.get("items") if isinstance(schema, dict) else None
        return [in_schema_order(item, items, root) for item in data]
    if not isinstance(data, dict):
        return data
    properties = _properties(schema, root, depth=0)
    order = [k for k in properties if k in data] + [k for k in data if k not in properties]
    return {k: in_schema_order(data[k], properties.get(k), root) for k in order}


def _properties(schema: Any, root: Any, depth: int) -> dict[str, Any]:
    if not isinstance(schema, dict) or depth > 8:
        return {}
    if isinstance(schema.get("const"), dict):
        return dict.fromkeys(schema["const"])
    found = dict(schema.get("properties", {}))
    ref = schema.get("$ref")
    parts = [_resolve(root, ref)] if isinstance(ref, str) and ref.startswith("#") else []
    parts += [s for key in ("allOf", "anyOf", "oneOf") for s in schema.get(key, [])]
    for part in parts:
        for key, value in _properties(part, root, depth + 1).items():
            found.setdefault(key, value)
    return found


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node


def integral_floats_as_ints(data: Any) -> Any:
    """1.0 -> 1: JSON Schema counts 1.0 as an integer and equal to 1; a grammar may not."""
    if isinstance(data, float) and data.is_integer() and abs(data) < 2**53:
        return int(data)
    if isinstance(data, list):
        return [integral_floats_as_ints(item) for item in data]
    if isinstance(data, dict):
        return {k: integral_floats_as_ints(v) for k, v in data.items()}
    return data


def _keys(data: Any) -> Iterator[str]:
    """The instance's keys in document order (dict equality ignores order)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _keys(value)
    elif isinstance(data, list):
        for item in data:
            yield from _keys(item)


def _refused(message: str, seconds: float) -> Compiled:
    for pattern, keywords in _UNSUPPORTED:
        match = pattern.search(message)
        if match:
            return Compiled("unsupported", seconds, keywords=keywords(match), message=message)
    return Compiled("error", seconds, message=message)
