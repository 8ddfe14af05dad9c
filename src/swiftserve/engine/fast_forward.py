"""Fast-forward: the tokens a grammar forces next (the rest of a JSON key, `": "`, ...) join the
sequence at once, right after the token sampled before them, instead of one decode step each.

They are uncomputed tokens of the sequence, so the next step feeds them together as one chunk
(the scheduler's chunked-prefill path for a running sequence) and samples after the last one.
Each is accepted into the matcher and appended as a sampled token would be: it counts against
max_tokens, a stop string may end the completion among them, and the grammar may complete.

Forced tokens are llguidance's canonical tokenization of the forced bytes: the text is the one
any path must produce, but a model sampling them one by one might spell it with other tokens, so
what follows them (model-chosen) may differ from the token-by-token path. A request that asks for
logprobs is not fast-forwarded: OpenAI reports a logprob for every output token, which a forced
token, never scored by the model, does not have.
"""

from __future__ import annotations

from swiftserve.engine.postprocess import append_token
from swiftserve.engine.request import Completion


class ForcedTokenRejectedError(RuntimeError):
    """The matcher rejected a token it forced itself: a grammar backend bug."""


def may_fast_forward(completion: Completion) -> bool:
    state = completion.state
    return state.grammar is not None and state.params.logprobs is None and completion.finish_reason is None


def fast_forward(completion: Completion, max_model_len: int) -> int:
    """Appends the tokens completion's grammar forces now, each accepted into it, until the
    completion finishes; how many were appended."""
    grammar = completion.state.grammar
    assert grammar is not None, "fast-forward of an unconstrained completion"
    forced = grammar.forced_tokens()
    for count, token_id in enumerate(forced, start=1):
        if not grammar.accept(token_id):
            reason = f"the grammar rejected its forced token {token_id}: {grammar.error()}"
            raise ForcedTokenRejectedError(reason)
        append_token(completion, token_id, None, max_model_len)
        if completion.finish_reason is not None:
            return count
    return len(forced)
