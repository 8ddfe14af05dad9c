"""Maps Hugging Face Llama checkpoint names onto the fused swiftserve layout."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# HF suffix -> (our fused parameter, which shard of it)
_FUSED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _target(name: str) -> tuple[str, int | None]:
    """Our parameter name for an HF name, plus the shard index for fused projections."""
    name = name.removeprefix("model.")
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in _FUSED:
            fused, shard = _FUSED[part]
            return ".".join(parts[:i] + [fused] + parts[i + 1 :]), shard
    return name, None


def _shard_slice(param: nn.Parameter, module_split: tuple[int, ...], shard: int) -> torch.Tensor:
    start = sum(module_split[:shard])
    return param.data.narrow(0, start, module_split[shard])


def load_llama_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    params = dict(model.named_parameters())
    cfg = model.config
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    splits = {"qkv_proj": (q, kv, kv), "gate_up_proj": (cfg.intermediate_size, cfg.intermediate_size)}
    expected = {n: p.numel() for n, p in params.items()}
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    for hf_name, tensor in weights:
        if hf_name.endswith(_IGNORED_SUFFIXES):
            continue
        name, shard = _target(hf_name)
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if name not in params:
            raise ValueError(f"checkpoint tensor {hf_name!r} has no place in the model")
        dest = (
            params[name].data
            if shard is None
            else _shard_slice(params[name], splits[name.split(".")[-2]], shard)
        )
        if dest.shape != tensor.shape:
            raise ValueError(
                f"checkpoint tensor {hf_name!r} has shape {tuple(tensor.shape)}, expected {tuple(dest.shape)}"
            )
        dest.copy_(tensor)
        expected[name] -= tensor.numel()
    missing = sorted(n for n, left in expected.items() if left != 0)
    if missing:
        raise ValueError(
            f"checkpoint is missing weights for: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
        )
