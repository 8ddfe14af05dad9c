"""Logits processors that run before temperature: logit bias, min_tokens, repetition/presence/frequency.

Each function takes the float32 logits of the rows being processed, shape [num_rows, vocab_size],
modifies them in place, and touches only the rows that asked for it: a batch where nobody uses a
penalty pays nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from swiftserve.model_runner.sampler import SamplingState


def needs_processing(state: SamplingState) -> bool:
    """True when any processor below would change this row's logits this step."""
    params = state.params
    return bool(
        params.logit_bias
        or params.repetition_penalty != 1.0
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
        or is_min_tokens_active(state)
    )


def is_min_tokens_active(state: SamplingState) -> bool:
    return bool(state.stop_token_ids) and len(state.output_token_ids) < state.params.min_tokens


def apply_all(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """Run the processors in the vLLM order: bias, min_tokens, repetition, presence/frequency."""
    apply_logit_bias(logits, states)
    apply_min_tokens(logits, states)
    apply_repetition_penalty(logits, states)
    apply_presence_frequency(logits, states)


def apply_logit_bias(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    vocab_size = logits.shape[-1]
    rows: list[int] = []
    token_ids: list[int] = []
    values: list[float] = []
    for row, state in enumerate(states):
        for token_id, value in (state.params.logit_bias or {}).items():
            token_id = int(token_id)  # JSON gives string keys
            if 0 <= token_id < vocab_size:
                rows.append(row)
                token_ids.append(token_id)
                values.append(float(value))
    if rows:
        index = (_long(rows, logits.device), _long(token_ids, logits.device))
        logits.index_put_(
            index, torch.tensor(values, dtype=logits.dtype, device=logits.device), accumulate=True
        )


def apply_min_tokens(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """Stop tokens (eos included) cannot be sampled until min_tokens outputs exist."""
    vocab_size = logits.shape[-1]
    rows: list[int] = []
    token_ids: list[int] = []
    for row, state in enumerate(states):
        if is_min_tokens_active(state):
            ids = [t for t in state.stop_token_ids if 0 <= t < vocab_size]
            rows.extend([row] * len(ids))
            token_ids.extend(ids)
    if rows:
        logits[_long(rows, logits.device), _long(token_ids, logits.device)] = float("-inf")


def apply_repetition_penalty(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """HF style on prompt + output tokens: positive logits divided by the penalty, negative multiplied."""
    rows = [i for i, s in enumerate(states) if s.params.repetition_penalty != 1.0]
    if not rows:
        return
    device = logits.device
    ids = [states[i].prompt_token_ids + states[i].output_token_ids for i in rows]
    is_seen = _token_counts(ids, logits.shape[-1], device) > 0
    penalty = torch.tensor([states[i].params.repetition_penalty for i in rows], device=device)[:, None]
    row_index = _long(rows, device)
    sub = logits[row_index]
    penalized = torch.where(sub > 0, sub / penalty, sub * penalty)
    logits[row_index] = torch.where(is_seen, penalized, sub)


def apply_presence_frequency(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """OpenAI style on output tokens only: logit -= frequency * count + presence * (count > 0)."""
    rows = [
        i
        for i, s in enumerate(states)
        if s.output_token_ids and (s.params.presence_penalty != 0.0 or s.params.frequency_penalty != 0.0)
    ]
    if not rows:
        return
    device = logits.device
    counts = _token_counts([states[i].output_token_ids for i in rows], logits.shape[-1], device)
    presence = torch.tensor([states[i].params.presence_penalty for i in rows], device=device)[:, None]
    frequency = torch.tensor([states[i].params.frequency_penalty for i in rows], device=device)[:, None]
    row_index = _long(rows, device)
    logits[row_index] -= frequency * counts + presence * (counts > 0)


def _token_counts(ids_per_row: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[num_rows, vocab_size] float32 occurrence counts. Ids out of range are ignored."""
    max_len = max(len(ids) for ids in ids_per_row)
    # Pad with vocab_size: an extra column that soaks up padding and out-of-range ids, cut at the end.
    padded = torch.full((len(ids_per_row), max(max_len, 1)), vocab_size, dtype=torch.long)
    for row, ids in enumerate(ids_per_row):
        if ids:
            padded[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    padded = padded.to(device)
    padded.masked_fill_((padded < 0) | (padded > vocab_size), vocab_size)
    counts = torch.zeros(len(ids_per_row), vocab_size + 1, device=device)
    counts.scatter_add_(1, padded, torch.ones_like(padded, dtype=counts.dtype))
    return counts[:, :vocab_size]


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)
