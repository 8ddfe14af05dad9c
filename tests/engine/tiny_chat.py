"""A tiny random Llama chat model folder (SmolLM2's tokenizer, two small layers, random weights in
Hugging Face names) for engine tests that need a real engine but not a real model's cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY_CONFIG = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    hidden_act="silu",
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=1024,
    vocab_size=49152,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
)
# One KV block of the tiny model in float32: K and V, per layer, per KV head, head_dim values of
# 4 bytes, for the scheduler's 16-token block.
_LAYERS, _KV_HEADS, _HEAD_DIM = (
    TINY_CONFIG[k] for k in ("num_hidden_layers", "num_key_value_heads", "head_dim")
)
BLOCK_BYTES = 2 * _LAYERS * _KV_HEADS * _HEAD_DIM * 4 * 16


def _weights(seed: int) -> dict[str, torch.Tensor]:
    c = TINY_CONFIG
    hidden, inter, head_dim = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.2

    shapes = {"self_attn.q_proj": (q, hidden), "self_attn.k_proj": (kv, hidden)}
    shapes |= {"self_attn.v_proj": (kv, hidden), "self_attn.o_proj": (hidden, q)}
    shapes |= {"mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden)}
    shapes |= {"mlp.down_proj": (hidden, inter)}
    out = {"model.embed_tokens.weight": rand(c["vocab_size"], hidden)}
    out["model.norm.weight"] = torch.ones(hidden)
    for i in range(c["num_hidden_layers"]):
        for name, shape in shapes.items():
            out[f"model.layers.{i}.{name}.weight"] = rand(*shape)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = torch.ones(hidden)
    return out


def make_tiny_chat(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Writes the tiny model into folder (created) and returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    save_file(_weights(seed), str(folder / "model.safetensors"))
    return folder
