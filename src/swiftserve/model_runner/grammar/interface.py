"""What the engine and the sampler need of a grammar library: compile a constraint once, follow
one sequence's tokens with a matcher, fill that sequence's row of a token bitmask each step.

A second backend (xgrammar, say) implements these three and nothing in the engine changes.
"""

from __future__ import annotations

from typing import Protocol

import torch

from swiftserve.structured_outputs import StructuredOutputs


class GrammarMatcher(Protocol):
    """One sequence's position in its grammar."""

    def accept(self, token_id: int) -> bool:
        """Advance past a sampled token; False when the grammar does not allow it (the matcher is
        then in error and stays there)."""
        ...

    def rollback(self, num_tokens: int) -> None:
        """Undo the last num_tokens accepted tokens (speculative tokens the target rejected)."""
        ...

    def is_finished(self) -> bool:
        """The grammar is complete and allows nothing more (but end of sequence)."""
        ...

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces next, whatever the model would pick (fast-forward)."""
        ...

    def error(self) -> str | None: ...


class CompiledGrammar(Protocol):
    """A compiled constraint, shared by every sequence that asks for it (and cached)."""

    def new_matcher(self) -> GrammarMatcher: ...


class GrammarBackend(Protocol):
    """Compiles constraints for one tokenizer and fills bitmasks of [rows, ceil(vocab / 32)] int32,
    bit j of word i allowing token 32 * i + j."""

    vocab_size: int

    def compile(self, spec: StructuredOutputs) -> CompiledGrammar:
        """Raises GrammarCompileError naming what is wrong with the constraint."""
        ...

    def fill_bitmask(self, rows: list[tuple[GrammarMatcher, int]], bitmask: torch.Tensor) -> None:
        """Write each matcher's allowed tokens into its row of bitmask (a CPU int32 tensor)."""
        ...


class GrammarCompileError(ValueError):
    """A constraint that cannot be compiled: an invalid schema or regex, a keyword the backend
    cannot enforce, a grammar that matches nothing. `param` names the request field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class GrammarBackendMissingError(RuntimeError):
    """Structured outputs were asked for but the grammar library is not installed."""
