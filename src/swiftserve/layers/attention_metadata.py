"""What attention needs to know about one flattened step, built by the model runner."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """One step's batch, decodes first: tokens [0, num_decode_tokens) are single-token decodes,
    one per sequence; the rest are prefill chunks of the prefill sequences, back to back.

    slot_mapping [num_tokens] int64: where each new token's K/V goes in the cache.
    decode_*: [num_decode_seqs, ...]; prefill_*: [num_prefill_seqs, ...]. Context lengths count
    every token of the sequence up to and including this step's.
    """

    slot_mapping: torch.Tensor
    num_decode_tokens: int
    decode_block_tables: torch.Tensor
    decode_context_lens: torch.Tensor
    prefill_block_tables: torch.Tensor
    prefill_query_start_loc: torch.Tensor
    prefill_context_lens: torch.Tensor

    @property
    def num_prefill_seqs(self) -> int:
        return self.prefill_context_lens.shape[0]
