"""Prompt logprobs (vLLM's `prompt_logprobs`): for each prompt token after the first, its logprob
given the tokens before it, its rank and the top-k alternatives, computed during prefill.

Position p's final hidden state scores token p + 1, so a prefill chunk [start, end) of a prompt
of P tokens yields the entries for tokens start + 1 .. min(end, P - 1):

    prompt tokens    t0   t1   t2   t3   t4                  (P = 5)
    chunk                 [start=1 ..... end=4)              hidden rows at positions 1, 2, 3
    scores                     t2   t3   t4                  -> entries 2, 3, 4

Position P - 1 scores the first output token: that row is the sampler's. Entry 0 is always None
(nothing scores the first token). Chunks of one prompt arrive in order across steps; a sequence
recomputed after preemption may score positions again, and the engine keeps the first result.
Logits are float32 (the runner's compute_logits) and taken a slab of rows at a time, so a long
prompt never holds [P, vocab] logits at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from swiftserve.model_runner.sampler import SamplingState
from swiftserve.model_runner.vocab_ops import blocked_topk
from swiftserve.outputs import TokenLogprob
from swiftserve.scheduler.output import ScheduledSeq

# Rows of logits materialized at a time: 256 x 49152 (SmolLM2) fp32 is 50 MB, twice that with
# the log_softmax, whatever the prompt length.
ROWS_PER_SLAB = 256


@dataclass
class PromptLogprobs:
    """The entries one step scored for one sequence: entries[i] is prompt token first_position + i."""

    seq_id: int
    first_position: int
    entries: list[TokenLogprob]


def compute_prompt_logprobs(
    order: list[ScheduledSeq],
    hidden: torch.Tensor,
    states: dict[int, SamplingState],
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
) -> list[PromptLogprobs]:
    """Entries for every item in `order` (the batch's token layout, hidden [tokens, H]) whose
    sequence needs prompt logprobs and whose chunk covers prompt positions before the last."""
    result = []
    offset = 0  # the item's first row in hidden
    for item in order:
        seq = item.seq
        end = min(item.start + item.num_new_tokens, seq.num_prompt_tokens - 1)
        k = states[seq.seq_id].params.prompt_logprobs if seq.needs_prompt_logprobs else None
        if k is not None and end > item.start:
            rows = hidden[offset : offset + end - item.start]
            targets = seq.token_ids[item.start + 1 : end + 1]
            entries = _score(rows, targets, k, compute_logits)
            result.append(PromptLogprobs(seq.seq_id, item.start + 1, entries))
        offset += item.num_new_tokens
    return result


def _score(
    hidden: torch.Tensor, targets: list[int], k: int, compute_logits: Callable[[torch.Tensor], torch.Tensor]
) -> list[TokenLogprob]:
    """TokenLogprob of targets[i] under hidden[i] (rank 1-based; top k best first)."""
    target_ids = torch.tensor(targets, dtype=torch.long, device=hidden.device)
    entries = []
    for start in range(0, len(targets), ROWS_PER_SLAB):
        stop = start + ROWS_PER_SLAB
        logprobs = torch.log_softmax(compute_logits(hidden[start:stop]), dim=-1)  # [r, V] fp32
        ids = target_ids[start:stop, None]
        chosen = logprobs.gather(1, ids)  # [r, 1]
        ranks = (logprobs > chosen).sum(dim=1) + 1
        top_values, top_ids = [[]] * len(ids), [[]] * len(ids)
        if k > 0:
            values, indices = blocked_topk(logprobs, k)
            top_values, top_ids = values.tolist(), indices.tolist()
        rows = zip(
            targets[start:stop], chosen[:, 0].tolist(), ranks.tolist(), top_ids, top_values, strict=True
        )
        for token_id, logprob, rank, tids, tvalues in rows:
            top = list(zip(tids, tvalues, strict=True))
            entries.append(TokenLogprob(token_id, logprob, top, rank=rank))
    return entries
