"""What the sampler and the logits processors know about one running sequence."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from swiftserve.model_runner.grammar.interface import GrammarMatcher
from swiftserve.sampling_params import SamplingParams


@dataclass
class SamplingState:
    """What the sampler needs to know about one running sequence; the engine appends outputs."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int] = field(default_factory=list)
    # eos ids (unless ignore_eos) | params.stop_token_ids; masked out until min_tokens outputs exist.
    stop_token_ids: frozenset[int] = frozenset()
    # Seeded per sequence when params.seed is set; None draws from the shared default generator.
    generator: torch.Generator | None = None
    # With params.structured_outputs: where the sequence is in its grammar (the engine accepts each
    # sampled token into it); None once the sequence is done with it.
    grammar: GrammarMatcher | None = None
