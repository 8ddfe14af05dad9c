"""Logprobs in the OpenAI wire formats: chat's per-token objects and vLLM's prompt_logprobs."""

from __future__ import annotations

from swiftserve.engine.served_model import TextTokenizer
from swiftserve.outputs import TokenLogprob
from swiftserve.server.protocol_chat import ChatLogprobs, ChatTokenLogprob, TopLogprob
from swiftserve.server.protocol_common import PromptLogprob, PromptLogprobs


def token_text(tokenizer: TextTokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id])


def chat_logprobs(tokenizer: TextTokenizer, entries: list[TokenLogprob]) -> ChatLogprobs:
    content = []
    for entry in entries:
        token = token_text(tokenizer, entry.token_id)
        top = [
            TopLogprob(token=(t := token_text(tokenizer, tid)), logprob=lp, bytes=list(t.encode()))
            for tid, lp in entry.top
        ]
        content.append(
            ChatTokenLogprob(token=token, logprob=entry.logprob, bytes=list(token.encode()), top_logprobs=top)
        )
    return ChatLogprobs(content=content)


def prompt_logprobs_json(
    tokenizer: TextTokenizer, entries: list[TokenLogprob | None], k: int
) -> PromptLogprobs:
    """vLLM's `prompt_logprobs`: per prompt token (the first None) a map token id -> logprob,
    rank and text, holding the prompt token itself and the top k alternatives."""
    result: PromptLogprobs = []
    for entry in entries:
        if entry is None:
            result.append(None)
            continue
        own = PromptLogprob(entry.logprob, entry.rank, token_text(tokenizer, entry.token_id))
        ranked = {entry.token_id: own}
        for rank, (token_id, logprob) in enumerate(entry.top[:k], start=1):
            ranked.setdefault(token_id, PromptLogprob(logprob, rank, token_text(tokenizer, token_id)))
        result.append(ranked)
    return result
