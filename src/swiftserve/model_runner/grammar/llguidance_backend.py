"""The llguidance backend (PyPI `llguidance`, the `structured` extra): Earley parsing over a lexer,
with masks computed in Rust with the GIL released.

Its tokenizer is built from our tokenizer.json text (about 0.6 s for SmolLM2's 49k tokens), once
per backend, with the non-special added tokens left to the vocabulary (plain_added_tokens.py).
A compiled grammar keeps one matcher as a template: each sequence gets a deep copy (~10 us)
instead of parsing the grammar again (~1-2 ms for a JSON schema).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer

from swiftserve.model_runner.grammar.interface import (
    GrammarBackendMissingError,
    GrammarCompileError,
    GrammarMatcher,
)
from swiftserve.model_runner.grammar.plain_added_tokens import plain_added_tokens
from swiftserve.structured_outputs import StructuredOutputs

# Compact JSON with one space after separators, as json.dumps writes it: no padding to max_tokens.
_BOUNDED_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _schema(spec: StructuredOutputs) -> dict[str, Any]:
    """spec.json as llguidance takes it: an object. The boolean schemas are not objects: `true`
    (any value) is `{}`; `false` allows nothing, so no output could ever be valid."""
    if spec.json is False:
        message = "the JSON schema `false` matches nothing: no output satisfies it"
        raise GrammarCompileError(spec.param, message)
    if spec.json is True:
        return {}
    assert isinstance(spec.json, dict)
    return spec.json


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise GrammarBackendMissingError(
            "structured outputs need llguidance: pip install 'swiftserve[structured]'"
        ) from None
    return llguidance


class LLGuidanceMatcher:
    __slots__ = ("matcher",)

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def accept(self, token_id: int) -> bool:
        return bool(self.matcher.consume_token(token_id))

    def rollback(self, num_tokens: int) -> None:
        if not self.matcher.rollback(num_tokens):
            raise ValueError(f"cannot roll back {num_tokens} tokens: {self.matcher.get_error()}")

    def is_finished(self) -> bool:
        return bool(self.matcher.is_stopped())

    def forced_tokens(self) -> list[int]:
        return list(self.matcher.compute_ff_tokens())

    def error(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None


class LLGuidanceGrammar:
    def __init__(self, template: Any) -> None:
        self.template = template

    def new_matcher(self) -> LLGuidanceMatcher:
        return LLGuidanceMatcher(self.template.deep_copy())


class LLGuidanceBackend:
    """tokenizer: the model's (Hugging Face `tokenizers`). vocab_size: the width of the model's
    logits (may exceed the tokenizer's own count)."""

    def __init__(
        self, tokenizer: Tokenizer, vocab_size: int, eos_token_ids: Sequence[int], num_threads: int = 1
    ) -> None:
        llg = _llguidance()
        self._llg = llg
        self.vocab_size = vocab_size
        plain = plain_added_tokens(tokenizer)
        self.tokenizer = llg.LLTokenizer(plain, n_vocab=vocab_size, eos_token=list(eos_token_ids))
        self._executor = llg.LLExecutor(num_threads)

    def compile(self, spec: StructuredOutputs) -> LLGuidanceGrammar:
        grammar = self._grammar_text(spec)
        template = self._llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if template.is_error():
            raise GrammarCompileError(
                spec.param, f"the {_what(spec)} does not compile: {template.get_error()}"
            )
        # Keywords llguidance parses but cannot enforce come back as warnings: refused, never ignored.
        warnings = template.get_grammar_warnings()
        if warnings:
            raise GrammarCompileError(
                spec.param, f"the {_what(spec)} cannot be enforced: {'; '.join(warnings)}"
            )
        # The first mask finds a grammar that allows no token at all (an empty regex language).
        template.compute_bitmask()
        if template.is_stopped() and not template.is_accepting():
            raise GrammarCompileError(
                spec.param, f"the {_what(spec)} matches nothing the tokenizer can spell"
            )
        return LLGuidanceGrammar(template)

    def _grammar_text(self, spec: StructuredOutputs) -> str:
        llg = self._llg
        options = None if spec.whitespace_flexible else _BOUNDED_JSON
        schema = _schema(spec) if spec.json is not None else None  # its refusal is not "invalid"
        try:
            if schema is not None:
                return llg.LLMatcher.grammar_from_json_schema(schema, defaults=options)
            if spec.json_object:
                return llg.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=options)
            if spec.regex is not None:
                return llg.LLMatcher.grammar_from_regex(spec.regex)
            if spec.choice is not None:
                return llg.grammar_from("choice", json.dumps(list(spec.choice)))
            assert spec.grammar is not None
            return llg.grammar_from("grammar", spec.grammar)  # Lark, or GBNF converted to Lark
        except ValueError as exc:
            raise GrammarCompileError(spec.param, f"the {_what(spec)} is invalid: {exc}") from None

    def fill_bitmask(self, rows: list[tuple[GrammarMatcher, int]], bitmask: torch.Tensor) -> None:
        assert bitmask.dtype == torch.int32 and bitmask.is_cpu and bitmask.is_contiguous()
        matchers = [(matcher.matcher, row) for matcher, row in rows]  # type: ignore[attr-defined]
        num_rows, num_words = bitmask.shape
        self._executor.unsafe_compute_mask_ptr(matchers, bitmask.data_ptr(), num_words * 4, num_rows)


def _what(spec: StructuredOutputs) -> str:
    return {
        "json": "JSON schema",
        "json_object": "JSON object grammar",
        "regex": "regex",
        "choice": "choice list",
        "grammar": "grammar",
    }[spec.kind]
