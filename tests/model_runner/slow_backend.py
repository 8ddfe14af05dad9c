"""A real grammar backend made slow on purpose: its build or its compiles take longer."""

from __future__ import annotations

import time
from collections.abc import Callable

from swiftserve.model_runner.grammar.interface import CompiledGrammar, GrammarBackend
from swiftserve.structured_outputs import StructuredOutputs


class SlowBackend:
    """Compiles as backend does, compile_s later (the compiler only calls compile)."""

    def __init__(self, backend: GrammarBackend, compile_s: float = 0.0) -> None:
        self.backend = backend
        self.compile_s = compile_s

    def compile(self, spec: StructuredOutputs) -> CompiledGrammar:
        time.sleep(self.compile_s)
        return self.backend.compile(spec)


def slow_build(backend: GrammarBackend, build_s: float, compile_s: float = 0.0) -> Callable[[], SlowBackend]:
    """A backend factory that takes build_s to build (as llguidance's tokenizer for a large
    vocabulary does); `made` on the factory counts its builds."""

    def make() -> SlowBackend:
        time.sleep(build_s)
        make.made += 1  # type: ignore[attr-defined]
        return SlowBackend(backend, compile_s)

    make.made = 0  # type: ignore[attr-defined]
    return make
