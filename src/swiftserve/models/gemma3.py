"""The Gemma 3 text decoder (transformers' Gemma3ForCausalLM) over a flat, unpadded batch.

What differs from models/llama.py: embeddings scaled by sqrt(hidden); RMSNorm scales by
(1 + weight), stored here as one weight (the +1 is added at load, as llama.cpp does) so the plain
RMSNorm kernels run; q and k are RMS-normed per head; each sublayer's output is normed again before
the residual add; a GELU-tanh gated MLP; five of every six layers attend over a sliding window with
their own rope base; scores scale by query_pre_attn_scalar, not head_dim. There is no fused decode
(llama_fused_decode.py is Llama's layer shape): decode runs op by op.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from swiftserve.layers.attention import PagedAttention
from swiftserve.layers.attention_metadata import AttentionMetadata
from swiftserve.layers.linear import Linear
from swiftserve.layers.norm import RMSNorm
from swiftserve.layers.rotary import RotaryEmbedding
from swiftserve.models.gemma3_config import Gemma3Config


class Gemma3Attention(nn.Module):
    def __init__(self, cfg: Gemma3Config, is_sliding: bool, backend: str | None) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.is_sliding = is_sliding
        self.qkv_proj = Linear(cfg.hidden_size, q_size + 2 * kv_size, cfg.attention_bias, backend)
        self.o_proj = Linear(q_size, cfg.hidden_size, cfg.attention_bias, backend)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, backend)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, backend)
        window = cfg.sliding_window if is_sliding else None
        scale = cfg.query_pre_attn_scalar**-0.5
        self.attn = PagedAttention(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, scale, window, backend)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata, rotary: RotaryEmbedding
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split(self.split, dim=-1)
        # Per-head norms over rows of head_dim: [tokens * heads, head_dim] -> [tokens, heads, head_dim]
        q = self.q_norm(q.reshape(-1, self.head_dim))[0].reshape(-1, self.num_heads, self.head_dim)
        k = self.k_norm(k.reshape(-1, self.head_dim))[0].reshape(-1, self.num_kv_heads, self.head_dim)
        v = v.reshape(-1, self.num_kv_heads, self.head_dim)
        rotary(positions, q, k)
        out = self.attn(q, k, v, meta)
        return self.o_proj(out.reshape(-1, self.num_heads * self.head_dim))


class Gemma3MLP(nn.Module):
    def __init__(self, cfg: Gemma3Config, backend: str | None) -> None:
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, backend=backend)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No kernel backend has a GELU-and-mul; torch's tanh GELU is transformers' gelu_pytorch_tanh.
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, cfg: Gemma3Config, is_sliding: bool, backend: str | None) -> None:
        super().__init__()
        size, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = Gemma3Attention(cfg, is_sliding, backend)
        self.mlp = Gemma3MLP(cfg, backend)
        self.input_layernorm = RMSNorm(size, eps, backend)
        self.post_attention_layernorm = RMSNorm(size, eps, backend)
        self.pre_feedforward_layernorm = RMSNorm(size, eps, backend)
        self.post_feedforward_layernorm = RMSNorm(size, eps, backend)

    def forward(self, positions, x, residual, meta: AttentionMetadata, rotary: RotaryEmbedding):
        """x is the previous sublayer's normed output, not yet added to residual (None at layer 0)."""
        x, residual = self.input_layernorm(x, residual)
        x = self.post_attention_layernorm(self.self_attn(positions, x, meta, rotary))[0]
        x, residual = self.pre_feedforward_layernorm(x, residual)
        return self.post_feedforward_layernorm(self.mlp(x))[0], residual


class Gemma3ForCausalLM(nn.Module):
    def __init__(self, cfg: Gemma3Config, backend: str | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Gemma3DecoderLayer(cfg, s, backend) for s in cfg.is_sliding)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, backend)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, backend=backend)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # Two cos/sin tables shared by all layers of their kind (one per layer would cost
        # max_positions * head_dim * 4 bytes each: 32 MiB for gemma-3-270m).
        max_pos = cfg.max_position_embeddings
        self.rotary_local = RotaryEmbedding(cfg.head_dim, max_pos, cfg.rope_local_theta, backend=backend)
        self.rotary_global = RotaryEmbedding(
            cfg.head_dim, max_pos, cfg.rope_theta, cfg.rope_scaling, backend=backend
        )

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.layers]

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Final hidden states [tokens, hidden] of the flat batch."""
        # transformers rounds the scale to the weights' dtype first (sqrt(640) -> 25.25 in bf16).
        scale = torch.tensor(self.config.hidden_size**0.5, dtype=self.embed_tokens.weight.dtype)
        x, residual = self.embed_tokens(input_ids) * scale, None
        for layer in self.layers:
            rotary = self.rotary_local if layer.self_attn.is_sliding else self.rotary_global
            x, residual = layer(positions, x, residual, meta, rotary)
        return self.norm(x, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        cap = self.config.final_logit_softcapping
        if cap is None:
            return logits
        # float32 out: the runner's bf16 refinement (model_runner/logits.py) would undo the cap.
        return torch.tanh(logits.float() / cap) * cap

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors in (q/k/v and gate/up fused); every parameter must arrive."""
        from swiftserve.models.llama_weights import load_llama_weights

        load_llama_weights(self, weights)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("norm.weight"):
                    param.add_(1.0)  # Gemma's RMSNorm scales by (1 + weight)
