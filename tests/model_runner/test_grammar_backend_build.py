"""The grammar backend's build (llguidance's tokenizer: seconds for a large vocabulary) is not a
compile: the compile timeout does not count it, a separate limit bounds it, and one slot builds
it once for every compiler (engine) of a model."""

from __future__ import annotations

import asyncio
import threading

import pytest

from swiftserve.engine.errors import GrammarError
from swiftserve.engine.grammar_backend_slot import GrammarBackendSlot
from swiftserve.engine.grammar_compiler import GrammarCompiler
from swiftserve.loader import load_tokenizer
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend
from swiftserve.structured_outputs import StructuredOutputs

from .slow_backend import slow_build

pytest.importorskip("llguidance")

SPEC = StructuredOutputs(json={"type": "object", "properties": {"a": {"type": "integer"}}})


@pytest.fixture(scope="module")
def backend(smollm_dir) -> LLGuidanceBackend:
    tokenizer = load_tokenizer(smollm_dir)
    return LLGuidanceBackend(tokenizer.tokenizer, 49152, tokenizer.eos_token_ids)


@pytest.mark.parametrize("is_async", [False, True])
def test_a_build_slower_than_the_timeout_does_not_fail_the_first_compile(backend, is_async) -> None:
    make = slow_build(backend, build_s=0.5)
    compiler = GrammarCompiler(make, timeout_s=0.05)
    try:
        compiled = asyncio.run(compiler.compile_async(SPEC)) if is_async else compiler.compile(SPEC)
        assert compiled.new_matcher() is not None
        assert (make.made, compiler.stats.num_timeouts, compiler.stats.num_failures) == (1, 0, 0)
    finally:
        compiler.shutdown()


def test_a_slow_compile_after_a_slow_build_is_still_refused(backend) -> None:
    compiler = GrammarCompiler(slow_build(backend, build_s=0.3, compile_s=0.5), timeout_s=0.05)
    try:
        with pytest.raises(GrammarError, match="within its timeout of 0.05 s"):
            asyncio.run(compiler.compile_async(SPEC))
        assert compiler.stats.num_timeouts == 1
    finally:
        compiler.shutdown()


def test_a_build_past_its_own_limit_is_refused_and_not_remembered(backend) -> None:
    compiler = GrammarCompiler(slow_build(backend, build_s=0.5), backend_timeout_s=0.05)
    try:
        with pytest.raises(GrammarError, match="not built within 0.05 s") as info:
            compiler.compile(SPEC)
        assert info.value.param == SPEC.param and compiler.stats.num_timeouts == 0
        compiler.start_backend().result(timeout=30)
        assert compiler.compile(SPEC).new_matcher() is not None  # the constraint was not at fault
    finally:
        compiler.shutdown()


def test_one_slot_builds_once_for_every_compiler(backend) -> None:
    make = slow_build(backend, build_s=0.1)
    slot = GrammarBackendSlot(make)
    first = GrammarCompiler(slot)
    first.start_backend().result(timeout=30)
    first.shutdown()
    second = GrammarCompiler(slot)
    try:
        assert second.compile(SPEC) is not None and make.made == 1
        assert second.backend is first.backend is not None
    finally:
        second.shutdown()


def test_a_build_cancelled_with_its_pool_starts_again(backend) -> None:
    make = slow_build(backend, build_s=0.0)
    slot = GrammarBackendSlot(make)
    first, release = GrammarCompiler(slot), threading.Event()
    first._thread_pool().submit(release.wait)  # its one thread busy: the build only queues
    assert not first.start_backend().done()
    first.shutdown()  # cancels the queued build
    release.set()
    second = GrammarCompiler(slot)
    try:
        assert second.compile(SPEC) is not None and make.made == 1
    finally:
        second.shutdown()
