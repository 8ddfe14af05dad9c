"""Decode steps of a few sequences as one native call (kernels/cpp_llama_decode.py).

On a CPU a small batch of single-token decodes is bound by reading the weights, and Python's
per-op work is a large share of what remains. When every layer would run the 'cpp' kernels
anyway, the whole stack of layers runs in one call to the same kernels, in the same order:
the numbers equal the op-by-op forward's (tests/models/test_llama_fused_decode.py).

llama.py imports this module, so this one never imports llama.py (not even for type hints: that
would be an import cycle, tests/test_layering.py). The model passes in what the table needs: the
rotary embedding and attention scale of its layers, and the layers themselves, read by attribute.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from swiftserve.kernels import cpp_llama_decode as fused
from swiftserve.layers.attention_metadata import AttentionMetadata

if TYPE_CHECKING:
    from swiftserve.layers.rotary import RotaryEmbedding
    from swiftserve.models.llama_config import LlamaConfig

logger = logging.getLogger(__name__)


class FusedDecode:
    """Owns the layer table of one model; rebuilt when the KV cache is rebound. Holds no
    reference to the model (which owns it), so dropping the model frees everything at once."""

    def __init__(self, cfg: LlamaConfig, rotary: RotaryEmbedding, attn_scale: float) -> None:
        self.table: fused.LlamaDecodeTable | None = None
        self.table_key: tuple[int, int] | None = None
        self.unusable: str | None = None  # why the table could not be built, once it failed
        self.rotary = rotary
        self.dims = fused.LlamaDecodeDims(
            hidden=cfg.hidden_size,
            num_heads=cfg.num_heads,
            num_kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            intermediate=cfg.intermediate_size,
            rot_dim=self.rotary.cos_sin_cache.shape[1],
            eps=cfg.rms_norm_eps,
            scale=attn_scale,
            sliding_window=cfg.sliding_window,
            is_neox=self.rotary.is_neox,
        )

    def try_run(
        self, layers: nn.ModuleList, x: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(x, residual) after every layer, or None when this step should run op by op."""
        if not self._applies(x, meta) or (table := self._table(layers)) is None:
            return None
        return fused.llama_decode_layers(
            table,
            x,
            positions,
            meta.slot_mapping,
            self.rotary.cos_sin_cache,
            meta.decode_block_tables,
            meta.decode_context_lens,
        )

    def _applies(self, x: torch.Tensor, meta: AttentionMetadata) -> bool:
        if self.unusable is not None or meta.num_prefill_seqs or not x.is_cpu:
            return False
        if not 0 < meta.num_decode_tokens <= fused.MAX_TOKENS:
            return False
        if (reason := fused.unsupported_reason(self.dims, x.dtype)) is not None:
            self.unusable = reason  # the same for every step: said once
            logger.warning("fused decode off for this model, decoding op by op: %s", reason)
            return False
        return True

    def _table(self, layers: nn.ModuleList) -> fused.LlamaDecodeTable | None:
        # Rebuilt when the cache is rebound or the weights move (model.to(...) after a step).
        attn0 = layers[0].self_attn
        key = (id(attn0.attn.k_cache), attn0.qkv_proj.weight.data_ptr())
        if self.table is None or self.table_key != key:
            self.table_key = key
            try:
                self.table = fused.LlamaDecodeTable(self.dims, [_layer_tensors(layer) for layer in layers])
            except ValueError as exc:  # weights it cannot take (e.g. mixed dtypes): op by op instead
                self.unusable = str(exc)
                logger.warning("fused decode off for this model, decoding op by op: %s", exc)
                return None
        return self.table


def _layer_tensors(layer: nn.Module) -> fused.LlamaLayerTensors:
    """The weights and KV cache of one llama.LlamaDecoderLayer, as the native table takes them."""
    attn, mlp = layer.self_attn, layer.mlp
    return fused.LlamaLayerTensors(
        input_norm=layer.input_layernorm.weight.data,
        qkv=attn.qkv_proj.weight.data,
        qkv_bias=None if attn.qkv_proj.bias is None else attn.qkv_proj.bias.data,
        o_proj=attn.o_proj.weight.data,
        post_norm=layer.post_attention_layernorm.weight.data,
        gate_up=mlp.gate_up_proj.weight.data,
        down=mlp.down_proj.weight.data,
        k_cache=attn.attn.k_cache,
        v_cache=attn.attn.v_cache,
    )
