"""The grammar layer on SmolLM2's real tokenizer: compile, masks, accept, rollback, finish,
fast-forward, refusals naming the problem; the compiler's cache, failures cached, timeouts."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from swiftserve.engine.errors import GrammarError
from swiftserve.engine.grammar_compiler import GrammarCompiler
from swiftserve.loader import load_tokenizer
from swiftserve.model_runner.grammar.bitmask import allocate_bitmask, apply_bitmask_
from swiftserve.model_runner.grammar.interface import GrammarCompileError
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend
from swiftserve.structured_outputs import StructuredOutputs, StructuredOutputsError

from .slow_backend import SlowBackend

pytest.importorskip("llguidance")

VOCAB = 49152
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer(smollm_dir):
    return load_tokenizer(smollm_dir)


@pytest.fixture(scope="module")
def backend(tokenizer) -> LLGuidanceBackend:
    return LLGuidanceBackend(tokenizer.tokenizer, VOCAB, tokenizer.eos_token_ids)


def _allowed(backend: LLGuidanceBackend, matcher) -> set[int]:
    bitmask = allocate_bitmask(1, VOCAB)
    backend.fill_bitmask([(matcher, 0)], bitmask)
    logits = torch.zeros(1, VOCAB)
    apply_bitmask_(logits, bitmask, [0])
    return set(torch.nonzero(logits[0] == 0).flatten().tolist())


def test_a_valid_instance_is_accepted_token_by_token_and_finishes(backend, tokenizer) -> None:
    matcher = backend.compile(StructuredOutputs(json=PERSON)).new_matcher()
    ids = tokenizer.encode('{"name": "Ada", "age": 36}', add_special_tokens=False)
    for token_id in ids:
        assert not matcher.is_finished()
        assert token_id in _allowed(backend, matcher)
        assert matcher.accept(token_id), matcher.error()
    assert matcher.is_finished() and matcher.error() is None


def test_invalid_text_is_masked_and_rejected(backend, tokenizer) -> None:
    matcher = backend.compile(StructuredOutputs(json=PERSON)).new_matcher()
    allowed = _allowed(backend, matcher)
    assert allowed and all(tokenizer.decode([t]).startswith("{") for t in allowed)
    bad = tokenizer.encode("Sure", add_special_tokens=False)[0]
    assert bad not in allowed
    assert not matcher.accept(bad)
    assert matcher.error() is not None


def test_bounded_whitespace_by_default_flexible_on_request(backend, tokenizer) -> None:
    space = tokenizer.encode(" ", add_special_tokens=False)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    for flexible in (False, True):
        matcher = backend.compile(StructuredOutputs(json=PERSON, whitespace_flexible=flexible)).new_matcher()
        assert matcher.accept(tokenizer.encode("{", add_special_tokens=False)[0])
        allowed = _allowed(backend, matcher)  # after the first `{`
        assert (space[0] in allowed or newline[0] in allowed) == flexible


def test_rollback_restores_the_mask(backend, tokenizer) -> None:
    matcher = backend.compile(StructuredOutputs(json=PERSON)).new_matcher()
    ids = tokenizer.encode('{"name": "Bo', add_special_tokens=False)
    before = None
    for i, token_id in enumerate(ids):
        if i == 2:
            before = _allowed(backend, matcher)
        assert matcher.accept(token_id)
    matcher.rollback(len(ids) - 2)
    assert _allowed(backend, matcher) == before
    with pytest.raises(ValueError):
        matcher.rollback(100)


def test_fast_forward_tokens_are_what_the_schema_forces(backend, tokenizer) -> None:
    matcher = backend.compile(StructuredOutputs(json=PERSON)).new_matcher()
    forced = matcher.forced_tokens()
    assert tokenizer.decode(forced).startswith('{"name"')


def test_matchers_of_one_grammar_are_independent(backend, tokenizer) -> None:
    grammar = backend.compile(StructuredOutputs(choice=("yes", "no")))
    a, b = grammar.new_matcher(), grammar.new_matcher()
    assert all(a.accept(t) for t in tokenizer.encode("yes", add_special_tokens=False))
    assert a.is_finished() and not b.is_finished()
    assert all(b.accept(t) for t in tokenizer.encode("no", add_special_tokens=False))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (StructuredOutputs(json={"type": "strng"}), "strng"),
        (StructuredOutputs(json={"type": "array", "uniqueItems": True}), "uniqueItems"),
        (StructuredOutputs(json={"not": {"type": "string"}}), "not"),
        (StructuredOutputs(regex="(unclosed"), "unclosed group"),
        (StructuredOutputs(regex=r"a[^\x00-\x{10FFFF}]"), "matches nothing"),
        (StructuredOutputs(grammar="start: undefined_rule"), "undefined_rule"),
    ],
)
def test_refusals_name_the_problem(backend, spec, message) -> None:
    with pytest.raises(GrammarCompileError, match=message) as info:
        backend.compile(spec)
    assert info.value.param == "structured_outputs"


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(json=PERSON, regex="a"), dict(choice=()), dict(json="{not json"), dict(regex="")],
)
def test_malformed_constraints_fail_before_compiling(kwargs) -> None:
    with pytest.raises(StructuredOutputsError):
        StructuredOutputs(**kwargs)


def test_the_cache_key_is_canonical() -> None:
    a = StructuredOutputs(json={"type": "object", "required": ["a"]}, param="response_format")
    b = StructuredOutputs(json='{"required": ["a"],   "type": "object"}', param="guided_json")
    assert a.cache_key() == b.cache_key()
    assert a.cache_key() != StructuredOutputs(json=b.json, whitespace_flexible=True).cache_key()


# -- the bitmask alone, over awkward vocabulary sizes -----------------------------------------------
@pytest.mark.parametrize("vocab", [1, 19, 32, 33, 99])
def test_apply_bitmask_masks_exactly_the_cleared_bits(vocab) -> None:
    generator = torch.Generator().manual_seed(vocab)
    allowed = torch.rand(2, vocab, generator=generator) < 0.5
    bitmask = allocate_bitmask(2, vocab)
    bitmask.zero_()
    for row in range(2):
        for token in torch.nonzero(allowed[row]).flatten().tolist():
            word, bit = divmod(token, 32)
            value = int(bitmask[row, word]) & 0xFFFFFFFF | (1 << bit)
            bitmask[row, word] = value - (1 << 32) if value >= 1 << 31 else value
    logits = torch.randn(3, vocab, generator=generator)
    original = logits.clone()
    apply_bitmask_(logits, bitmask, [0, 2])  # rows 0 and 2 of the logits; row 1 is free
    for k, row in enumerate([0, 2]):
        expected = torch.where(allowed[k], original[row], torch.tensor(float("-inf")))
        assert torch.equal(logits[row], expected)
    assert torch.equal(logits[1], original[1])


def test_a_mask_narrower_than_the_logits_disallows_the_rest() -> None:
    logits = torch.zeros(1, 40)
    apply_bitmask_(logits, allocate_bitmask(1, 32), [0])  # every bit set, for 32 tokens only
    assert torch.isfinite(logits[0, :32]).all() and torch.isinf(logits[0, 32:]).all()


# -- the compiler: cache, failures cached, timeouts --------------------------------------------------
def test_compiler_caches_successes_and_failures(backend) -> None:
    compiler = GrammarCompiler(lambda: backend, cache_size=2)
    try:
        first = compiler.compile(StructuredOutputs(json=PERSON))
        assert compiler.compile(StructuredOutputs(json=json.dumps(PERSON), param="guided_json")) is first
        for param in ("response_format", "guided_json"):
            with pytest.raises(GrammarError, match="uniqueItems") as info:
                compiler.compile(StructuredOutputs(json={"uniqueItems": True}, param=param))
            assert info.value.param == param  # a cached failure names the field that asks now
        assert (compiler.stats.num_compiles, compiler.stats.num_cache_hits) == (2, 2)
        assert compiler.stats.num_failures == 1
        compiler.compile(StructuredOutputs(regex="[0-9]+"))  # evicts the least recently used: PERSON
        assert compiler.compile(StructuredOutputs(json=PERSON)) is not first
        assert compiler.stats.num_compiles == 4
    finally:
        compiler.shutdown()


def test_a_compile_past_its_timeout_is_refused_and_remembered(backend) -> None:
    compiler = GrammarCompiler(lambda: SlowBackend(backend, compile_s=0.5), timeout_s=0.05)
    spec = StructuredOutputs(json=PERSON, param="response_format")
    try:
        with pytest.raises(GrammarError, match="within its timeout of 0.05 s") as info:
            asyncio.run(compiler.compile_async(spec))
        assert info.value.param == "response_format"
        with pytest.raises(GrammarError, match="timeout"):
            compiler.compile(spec)  # fails fast from the cache
        assert compiler.stats.num_timeouts == 1
    finally:
        compiler.shutdown()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_bitmask_takes_both_paths_alike(dtype) -> None:
    bitmask = allocate_bitmask(1, 70)
    bitmask[0, 1] = 0  # tokens 32..63 disallowed, 64..69 allowed
    logits = torch.zeros(2, 70, dtype=dtype)
    apply_bitmask_(logits, bitmask, [1])
    assert torch.isinf(logits[1, 32:64]).all() and (logits[1, :32] == 0).all() and (logits[1, 64:] == 0).all()
    assert (logits[0] == 0).all()


def test_apply_bitmask_without_the_kernel_is_the_same_and_says_so_once(monkeypatch, caplog) -> None:
    from swiftserve.kernels import cpp_bitmask

    from swiftserve.model_runner.grammar import bitmask as bitmask_module

    generator = torch.Generator().manual_seed(3)
    mask = torch.randint(-(2**31), 2**31 - 1, (2, 4), generator=generator, dtype=torch.int32)
    logits = torch.randn(3, 100, generator=generator)
    native, fallback = logits.clone(), logits.clone()
    apply_bitmask_(native, mask, [2, 0])
    monkeypatch.setattr(cpp_bitmask, "is_available", lambda: False)
    bitmask_module._log_fallback.cache_clear()
    with caplog.at_level("WARNING", logger="swiftserve.grammar"):
        apply_bitmask_(fallback, mask, [2, 0])
        apply_bitmask_(fallback.clone(), mask, [2, 0])
    assert torch.equal(native, fallback)
    assert len([r for r in caplog.records if "without the C++ kernel" in r.getMessage()]) == 1
