"""What an embed() call is made of: validated token ids in, one output row per input.

Split from embedding_engine.py so the engine file is only batching and stepping.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np
from tokenizers import Tokenizer

from swiftserve.engine.errors import InvalidRequestError


@dataclass
class EmbeddingResult:
    embeddings: np.ndarray  # float32 [num_inputs, dim], one row per input in order
    num_prompt_tokens: int  # tokens the model read, special tokens included, after truncation


class EmbedRequest:
    """One embed() call: its token ids and the rows filled in so far (rows are written on the
    executor thread; the future is settled on the caller's event loop)."""

    __slots__ = ("token_ids", "embeddings", "num_left", "future")

    def __init__(self, token_ids: list[list[int]], dim: int, future: asyncio.Future | None) -> None:
        self.token_ids = token_ids
        self.embeddings = np.empty((len(token_ids), dim), dtype=np.float32)
        self.num_left = len(token_ids)
        self.future = future

    @property
    def is_abandoned(self) -> bool:
        """Cancelled by its caller or already failed: its remaining rows need no compute."""
        return self.future is not None and self.future.done()

    def result(self) -> EmbeddingResult:
        return EmbeddingResult(self.embeddings, sum(len(ids) for ids in self.token_ids))


def as_batch(inputs) -> list:
    """A lone string or token-id list becomes a batch of one; an empty batch is an error."""
    if isinstance(inputs, str) or (isinstance(inputs, list | tuple) and inputs and type(inputs[0]) is int):
        return [inputs]
    if not isinstance(inputs, list | tuple):
        kinds = "a string, a list of strings or a list of token-id lists"
        raise InvalidRequestError("input", f"input must be {kinds}, not {_type(inputs)}")
    if not inputs:
        raise InvalidRequestError("input", "input is empty: give at least one string or token-id list")
    return list(inputs)


def to_token_ids(tokenizer, vocab_size: int, max_seq_length: int, inputs: list) -> list[list[int]]:
    """Validate and tokenize; every sequence comes back 1..max_seq_length tokens long."""
    if isinstance(inputs[0], str):
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidRequestError(
                    "input", f"input[{i}]: expected a string as input[0] is, got {_type(text)}"
                )
            if not text:
                raise InvalidRequestError("input", f"input[{i}] is an empty string")
        return [encoding.ids for encoding in tokenizer.encode_batch(inputs)]
    token_ids = []
    for i, ids in enumerate(inputs):
        if not isinstance(ids, list | tuple):
            raise InvalidRequestError("input", f"input[{i}]: expected a list of token ids, got {_type(ids)}")
        if not ids:
            raise InvalidRequestError("input", f"input[{i}] is an empty list of token ids")
        bad = [t for t in ids if type(t) is not int or not 0 <= t < vocab_size]
        if bad:
            raise InvalidRequestError(
                "input", f"input[{i}]: token ids must be ints in [0, {vocab_size}), got {bad[:5]!r}"
            )
        token_ids.append(list(ids[:max_seq_length]))
    return token_ids


def truncating_copy(tokenizer, max_seq_length: int):
    """A private copy that adds special tokens, truncates like sentence-transformers and never pads.

    tokenizer.json files often carry a fixed padding or a shorter truncation (MiniLM's pads and
    truncates to 128); the shared tokenizer object is left untouched.
    """
    copy = type(tokenizer).from_str(tokenizer.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length=max_seq_length)
    return copy


def truncates_at(tokenizer: Tokenizer | None, max_seq_length: int) -> TypeGuard[Tokenizer]:
    """Whether tokenizer is a truncating_copy(..., max_seq_length) (False for None)."""
    if tokenizer is None or tokenizer.padding is not None:
        return False
    truncation = tokenizer.truncation
    return truncation is not None and truncation["max_length"] == max_seq_length


def _type(value) -> str:
    return type(value).__name__
