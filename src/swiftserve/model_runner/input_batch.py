"""Flattens a scheduled step into the model's unpadded inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from swiftserve.layers.attention_metadata import AttentionMetadata
from swiftserve.scheduler.output import ScheduledSeq, SchedulerOutput


@dataclass
class InputBatch:
    """The step as tensors. `order` lists the scheduled items as laid out (decodes first);
    `sampling_items` are those that yield a token, in the row order of `logits_indices`."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor
    order: list[ScheduledSeq]
    sampling_items: list[ScheduledSeq]


def _block_table(items: list[ScheduledSeq]) -> torch.Tensor:
    width = max((len(item.seq.block_ids) for item in items), default=0)
    rows = [item.seq.block_ids + [0] * (width - len(item.seq.block_ids)) for item in items]
    return torch.tensor(rows, dtype=torch.int32).reshape(len(items), width)


def _slots(item: ScheduledSeq, block_size: int) -> list[int]:
    blocks = item.seq.block_ids
    return [
        blocks[p // block_size] * block_size + p % block_size
        for p in range(item.start, item.start + item.num_new_tokens)
    ]


def prepare_inputs(out: SchedulerOutput, block_size: int, device: torch.device) -> InputBatch:
    decodes = [item for item in out.scheduled if item.num_new_tokens == 1]
    prefills = [item for item in out.scheduled if item.num_new_tokens > 1]
    order = decodes + prefills
    input_ids, positions, slots, logits_indices, sampling = [], [], [], [], []
    query_start_loc = [0]
    for item in order:
        input_ids += item.seq.token_ids[item.start : item.start + item.num_new_tokens]
        positions += range(item.start, item.start + item.num_new_tokens)
        slots += _slots(item, block_size)
        if item.is_sampling:
            logits_indices.append(len(input_ids) - 1)
            sampling.append(item)
    for item in prefills:
        query_start_loc.append(query_start_loc[-1] + item.num_new_tokens)
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        num_decode_tokens=len(decodes),
        decode_block_tables=_block_table(decodes),
        decode_context_lens=torch.tensor([i.start + 1 for i in decodes], dtype=torch.int32),
        prefill_block_tables=_block_table(prefills),
        prefill_query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32),
        prefill_context_lens=torch.tensor([i.start + i.num_new_tokens for i in prefills], dtype=torch.int32),
    )
    batch = InputBatch(
        input_ids=torch.tensor(input_ids, dtype=torch.int64),
        positions=torch.tensor(positions, dtype=torch.int64),
        meta=meta,
        logits_indices=torch.tensor(logits_indices, dtype=torch.int64),
        order=order,
        sampling_items=sampling,
    )
    return _to_device(batch, device) if device.type != "cpu" else batch


def _to_device(batch: InputBatch, device: torch.device) -> InputBatch:
    meta = batch.meta
    for name in (
        "slot_mapping",
        "decode_block_tables",
        "decode_context_lens",
        "prefill_block_tables",
        "prefill_query_start_loc",
        "prefill_context_lens",
    ):
        setattr(meta, name, getattr(meta, name).to(device, non_blocking=True))
    for name in ("input_ids", "positions", "logits_indices"):
        setattr(batch, name, getattr(batch, name).to(device, non_blocking=True))
    return batch
