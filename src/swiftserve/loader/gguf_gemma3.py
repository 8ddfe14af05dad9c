"""Convert a llama.cpp Gemma 3 GGUF (architecture "gemma3") into a Hugging Face Gemma3ForCausalLM folder.

What llama.cpp's converter changed, and is undone here:
- every RMSNorm weight w was stored as 1 + w (llama.cpp's norm multiplies by the weight alone);
- tensor names (blk.N.ffn_norm is Gemma's pre_feedforward_layernorm, and so on);
- metadata llama.cpp hard-codes for Gemma 3 is not in the file: the local rope base (10000), the
  layer pattern (every 6th layer global) and the attention scale (query_pre_attn_scalar).
Gemma 3 shares rotary layout with transformers (no q/k row permutation). The chat template and
<end_of_turn> as a stop token are added when the file lacks them (base-model GGUFs do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from gguf import GGUFReader
from tqdm.auto import tqdm

from swiftserve.loader.gguf_convert import (
    CONVERSION_FILE,
    CONVERSION_VERSION,
    _eos_ids,
    _f32,
    _write_json,
    _write_safetensors,
    dequantize_tensor,
)
from swiftserve.loader.gguf_metadata import arch_value, field_value
from swiftserve.loader.gguf_tokenizer import build_gguf_tokenizer

_ARCH = "gemma3"
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# llama.cpp's constants for Gemma 3 (src/llama-model.cpp), absent from the GGUF metadata.
_SLIDING_WINDOW_PATTERN = 6
_ROPE_LOCAL_BASE = 10_000.0
_GEMMA3_27B_LAYERS = 62  # the one size whose attention scale is hidden/heads, not head_dim
END_OF_TURN = "<end_of_turn>"

# Google's Gemma 3 chat template (text parts only), as its Hugging Face repositories ship it.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    '{%- set first_user_prefix = "" -%}'
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    '{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}'
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}"
    '{%- set role = "model" -%}'
    "{%- else -%}"
    "{%- set role = message['role'] -%}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}"
    "{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    '{{ raise_exception("Invalid content type") }}'
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{'<start_of_turn>model\n'}}"
    "{%- endif -%}"
)


def convert_gemma3_gguf(reader: GGUFReader, gguf_path: Path, out_dir: Path, progress: bool = True) -> None:
    """Writes config.json, model*.safetensors, tokenizer files and generation_config.json into out_dir."""
    tokens: list[str] = field_value(reader, "tokenizer.ggml.tokens") or []
    eos_ids = _eos_ids(reader)
    if END_OF_TURN in tokens and tokens.index(END_OF_TURN) not in eos_ids:
        eos_ids.append(tokens.index(END_OF_TURN))  # a chat turn ends here; the base GGUF omits it
    config = gemma3_config(reader, eos_ids)
    tokenizer, tokenizer_config = build_gguf_tokenizer(reader)
    tokenizer_config["model_max_length"] = config["max_position_embeddings"]
    tokenizer_config.setdefault("chat_template", GEMMA3_CHAT_TEMPLATE)

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = tqdm(reader.tensors, desc=f"converting {gguf_path.name}", unit="tensor", disable=not progress)
    _write_safetensors(_hf_weights(tensors), out_dir)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    _write_json(out_dir / "config.json", config)
    generation_config = {"bos_token_id": config["bos_token_id"], "eos_token_id": eos_ids}
    _write_json(out_dir / "generation_config.json", generation_config)
    _write_json(out_dir / CONVERSION_FILE, {"version": CONVERSION_VERSION, "source": gguf_path.name})


def gemma3_config(reader: GGUFReader, eos_ids: list[int]) -> dict:
    """transformers' Gemma3TextConfig fields (the pre-v5 spelling, which v5 still reads)."""

    def value(key: str, default=None):
        return arch_value(reader, _ARCH, key, default)

    required = ("embedding_length", "feed_forward_length", "block_count", "attention.head_count")
    missing = [f"{_ARCH}.{key}" for key in required if not value(key)]
    tensors = {t.name: t for t in reader.tensors}
    if missing or "token_embd.weight" not in tensors:
        raise ValueError(f"the GGUF file lacks the metadata {missing} or the token_embd.weight tensor")
    hidden, heads, num_layers = value("embedding_length"), value("attention.head_count"), value("block_count")
    head_dim = value("attention.key_length", 256)
    scaling_type = value("rope.scaling.type")
    rope_scaling = None
    if scaling_type not in (None, "none"):  # the 4B-27B models: linear, factor 8, on global layers
        rope_scaling = {"rope_type": scaling_type, "factor": _f32(value("rope.scaling.factor", 1.0))}
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": hidden,
        "intermediate_size": value("feed_forward_length"),
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": value("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": _f32(value("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": _f32(value("rope.freq_base", 1_000_000.0)),
        "rope_local_base_freq": _ROPE_LOCAL_BASE,
        "rope_scaling": rope_scaling,
        "sliding_window": value("attention.sliding_window", 4096),
        "layer_types": [
            "sliding_attention" if (i + 1) % _SLIDING_WINDOW_PATTERN else "full_attention"
            for i in range(num_layers)
        ],
        "query_pre_attn_scalar": hidden // heads if num_layers == _GEMMA3_27B_LAYERS else head_dim,
        "final_logit_softcapping": value("final_logit_softcapping"),
        "attn_logit_softcapping": None,
        "max_position_embeddings": value("context_length", 131_072),
        "vocab_size": int(tensors["token_embd.weight"].shape[1]),  # GGUF shapes are (columns, rows)
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": False,
        "bos_token_id": field_value(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_ids,
        "pad_token_id": field_value(reader, "tokenizer.ggml.padding_token_id"),
        "torch_dtype": "bfloat16",
    }


def _hf_weights(tensors) -> Iterator[tuple[str, torch.Tensor]]:
    for tensor in tensors:
        name = gemma3_tensor_name(tensor.name)
        weight = torch.from_numpy(dequantize_tensor(tensor))
        if name.endswith("norm.weight"):
            weight = weight - 1.0  # back to transformers' (1 + w) convention, in float32 before rounding
        yield name, weight.to(torch.bfloat16)


def gemma3_tensor_name(gguf_name: str) -> str:
    """`blk.3.ffn_norm.weight` -> `model.layers.3.pre_feedforward_layernorm.weight`.

    Unknown names raise ValueError: dropping a tensor would give a wrong model.
    """
    base, _, suffix = gguf_name.rpartition(".")
    parts = base.split(".")
    if len(parts) == 1 and parts[0] in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[parts[0]]}.{suffix}"
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face Gemma 3 equivalent")
