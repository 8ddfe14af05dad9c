"""Plain results handed back to callers of the engine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """Logprob of one generated token plus the top alternatives (token id, logprob), best first.
    `rank` (1-based, in its row's distribution) is set for prompt logprobs."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    rank: int | None = None


@dataclass
class CompletionOutput:
    """One of the n completions of a request; text and token_ids are cumulative."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop", "length", "abort" or None while running
    stop_reason: str | int | None = None  # the stop string or token id that ended it
    logprobs: list[TokenLogprob] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    # With SamplingParams.prompt_logprobs: one entry per prompt token, the first None (vLLM).
    prompt_logprobs: list[TokenLogprob | None] | None = None
    # Set when this request failed inside a step (its completions end "abort"); the others in the
    # batch went on. The async engine raises it as RequestFailedError.
    error: str | None = None
