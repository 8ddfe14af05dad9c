"""The Llama-family decoder (Llama 2/3, Qwen2, Mistral, SmolLM2) over a flat, unpadded batch.

q, k and v share one projection, and gate and up another: fewer, larger matmuls per layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from swiftserve.layers.activation import SiluAndMul
from swiftserve.layers.attention import PagedAttention
from swiftserve.layers.attention_metadata import AttentionMetadata
from swiftserve.layers.linear import Linear
from swiftserve.layers.norm import RMSNorm
from swiftserve.layers.rotary import RotaryEmbedding
from swiftserve.models.llama_config import LlamaConfig
from swiftserve.models.llama_fused_decode import FusedDecode


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig, backend: str | None) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.qkv_proj = Linear(cfg.hidden_size, q_size + 2 * kv_size, cfg.attention_bias, backend)
        self.o_proj = Linear(q_size, cfg.hidden_size, backend=backend)
        self.rotary = RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling, backend=backend
        )
        self.attn = PagedAttention(
            cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.head_dim**-0.5, cfg.sliding_window, backend
        )

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split(self.split, dim=-1)
        q = q.reshape(-1, self.num_heads, self.head_dim)  # [tokens, heads, head_dim]
        k = k.reshape(-1, self.num_kv_heads, self.head_dim)
        v = v.reshape(-1, self.num_kv_heads, self.head_dim)
        self.rotary(positions, q, k)
        out = self.attn(q, k, v, meta)
        return self.o_proj(out.reshape(-1, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig, backend: str | None) -> None:
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, backend=backend)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, backend=backend)
        self.act = SiluAndMul(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, backend: str | None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg, backend)
        self.mlp = LlamaMLP(cfg, backend)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, backend)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, backend)

    def forward(self, positions, x, residual, meta: AttentionMetadata):
        x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig, backend: str | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, backend) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, backend)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, backend=backend)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # Decode steps of a few sequences run all layers in one native call when every op would
        # be the 'cpp' kernel anyway; set to None to force the op-by-op path.
        self.fused_decode = None
        if backend in (None, "cpp"):
            attn0 = self.layers[0].self_attn
            self.fused_decode = FusedDecode(cfg, attn0.rotary, attn0.attn.scale)

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.layers]

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Final hidden states [tokens, hidden] of the flat batch."""
        x, residual = self.embed_tokens(input_ids), None
        fused = self.fused_decode and self.fused_decode.try_run(self.layers, x, positions, meta)
        if fused:
            x, residual = fused
        else:
            for layer in self.layers:
                x, residual = layer(positions, x, residual, meta)
        return self.norm(x, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors in, fusing q/k/v and gate/up; every parameter must arrive."""
        from swiftserve.models.llama_weights import load_llama_weights

        load_llama_weights(self, weights)
