"""What the router's request API hands back: plain dataclasses, the same for HTTP and Python.

A request has one or more prompts (chat: one; completions: up to the server's limit) and n
choices per prompt; choice `prompt_index * n + i` is the i-th completion of that prompt.
Streaming yields one `GenerationStep` per engine output; `collect` (generation.py) folds the
steps into one `Generation`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from swiftserve.outputs import TokenLogprob

# Per prompt token the logprob entry (the first token has none), as RequestOutput.prompt_logprobs.
PromptLogprobs = list[TokenLogprob | None]


@dataclass(frozen=True)
class Usage:
    """Tokens read and written; also the wire form of OpenAI's `usage` (server/protocol_*.py encode
    it as it is, total_tokens included: a field, so that every encoder sees it)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)


@dataclass(frozen=True)
class ChoiceDelta:
    """What one choice produced since the previous step (a finished choice has finish_reason)."""

    index: int
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None  # None unless the request asked for logprobs
    finish_reason: str | None


@dataclass(frozen=True)
class GenerationStep:
    """One engine output of prompt `prompt_index`: the choices that changed, and usage so far."""

    prompt_index: int
    deltas: list[ChoiceDelta]
    usage: Usage
    prompt_logprobs: PromptLogprobs | None = None  # on the prompt's first step, when asked for

    @property
    def num_new_tokens(self) -> int:
        return sum(len(delta.token_ids) for delta in self.deltas)


@dataclass
class GenerationStream:
    """An admitted request: every prompt has produced its first output, so a full queue or a bad
    parameter was raised before this was returned. Iterate it (or `steps`); `aclose()` before the
    end aborts the request and frees its KV blocks (`async with contextlib.aclosing(stream)`)."""

    model: str
    n: int
    prompt_token_ids: list[list[int]]
    steps: AsyncGenerator[GenerationStep, None]

    def __aiter__(self) -> AsyncGenerator[GenerationStep, None]:
        return self.steps

    async def aclose(self) -> None:
        await self.steps.aclose()


@dataclass(frozen=True)
class Choice:
    """One finished choice: all its text, tokens and (when asked for) logprobs."""

    index: int
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None


@dataclass(frozen=True)
class Generation:
    """A finished request (chat or completion)."""

    model: str
    choices: list[Choice]
    usage: Usage
    prompt_token_ids: list[list[int]]
    prompt_logprobs: list[PromptLogprobs | None] = field(default_factory=list)  # per prompt

    @property
    def text(self) -> str:
        """The first choice's text: what a one-choice caller wants."""
        return self.choices[0].text
