"""Convert a llama.cpp GGUF file into a Hugging Face folder (bf16 safetensors, config, tokenizer).

The weights are dequantized with gguf's own reference code (gguf.quants), renamed to Hugging Face
names and, for the "llama" architecture, un-permuted: llama.cpp's converter reorders the rows of
q_proj and k_proj so that its rotary embedding can rotate adjacent pairs; Hugging Face models
rotate the two halves of each head (neox style), which is the order restored here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader, ReaderTensor
from gguf.quants import dequantize
from safetensors.torch import save_file
from tqdm.auto import tqdm

from swiftserve.loader.gguf_metadata import arch_value, field_value
from swiftserve.loader.gguf_tokenizer import build_gguf_tokenizer

MAX_SHARD_BYTES = 2 << 30
# Bump when the converted folder changes, so caches made by an older converter are rebuilt.
CONVERSION_VERSION = 1
CONVERSION_FILE = "swiftserve_conversion.json"

_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# rope_freqs holds Llama-3 rope scaling divisors; config.json's rope_scaling describes them instead.
_SKIPPED = frozenset({"rope_freqs.weight"})


@dataclass(frozen=True)
class _Arch:
    hf_class: str
    model_type: str
    rotary_permuted: bool  # llama.cpp permuted q/k rows for its interleaved rotary layout


_ARCHS = {
    "llama": _Arch("LlamaForCausalLM", "llama", rotary_permuted=True),
    "qwen2": _Arch("Qwen2ForCausalLM", "qwen2", rotary_permuted=False),
}


def convert_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> None:
    """Writes config.json, model*.safetensors, tokenizer files and generation_config.json into out_dir."""
    reader = GGUFReader(gguf_path)
    arch_name = field_value(reader, "general.architecture")
    if arch_name not in _ARCHS:
        raise ValueError(
            f"{gguf_path.name}: GGUF architecture {arch_name!r} is not supported "
            f"(supported: {sorted([*_ARCHS, 'gemma3'])})"
        )
    eos_ids = _eos_ids(reader)
    config = _model_config(reader, arch_name, eos_ids)
    tokenizer, tokenizer_config = build_gguf_tokenizer(reader)
    tokenizer_config["model_max_length"] = config["max_position_embeddings"]

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = tqdm(reader.tensors, desc=f"converting {gguf_path.name}", unit="tensor", disable=not progress)
    _write_safetensors(_hf_weights(tensors, config, _ARCHS[arch_name]), out_dir)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    _write_json(out_dir / "config.json", config)
    generation_config = {"bos_token_id": config["bos_token_id"]} if config["bos_token_id"] is not None else {}
    if eos_ids:
        generation_config["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    _write_json(out_dir / "generation_config.json", generation_config)
    _write_json(out_dir / CONVERSION_FILE, {"version": CONVERSION_VERSION, "source": gguf_path.name})


def is_current_conversion(folder: Path) -> bool:
    """Whether folder holds a finished conversion made by this version of the converter."""
    try:
        marker = json.loads((folder / CONVERSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("version") == CONVERSION_VERSION


def _model_config(reader: GGUFReader, arch_name: str, eos_ids: list[int]) -> dict:
    def value(key: str, default=None):
        return arch_value(reader, arch_name, key, default)

    required = ("embedding_length", "feed_forward_length", "block_count", "attention.head_count")
    missing = [f"{arch_name}.{key}" for key in required if not value(key)]
    if missing:
        raise ValueError(f"the GGUF file lacks the metadata {missing}")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError("the GGUF file has no token_embd.weight tensor")
    hidden_size, num_heads = value("embedding_length"), value("attention.head_count")
    head_dim = value("attention.key_length", hidden_size // num_heads)
    rope_theta = _f32(value("rope.freq_base", 10000.0))
    config = {
        "architectures": [_ARCHS[arch_name].hf_class],
        "model_type": _ARCHS[arch_name].model_type,
        "hidden_size": hidden_size,
        "intermediate_size": value("feed_forward_length"),
        "num_hidden_layers": value("block_count"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": value("attention.head_count_kv", num_heads),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _f32(value("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": rope_theta,
        "max_position_embeddings": value("context_length", 2048),
        "vocab_size": int(tensors["token_embd.weight"].shape[1]),  # GGUF shapes are (columns, rows)
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": False,
        "bos_token_id": field_value(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_ids[0] if eos_ids else None,
        "torch_dtype": "bfloat16",
    }
    scaling_type = value("rope.scaling.type")
    if "rope_freqs.weight" in tensors:
        rope_freqs = dequantize_tensor(tensors["rope_freqs.weight"])
        config["rope_scaling"] = llama3_rope_scaling(rope_freqs, head_dim, rope_theta)
    elif scaling_type not in (None, "none"):
        config["rope_scaling"] = {
            "rope_type": scaling_type,
            "factor": _f32(value("rope.scaling.factor", 1.0)),
            "original_max_position_embeddings": value("rope.scaling.original_context_length"),
        }
    return config


def llama3_rope_scaling(rope_freqs: np.ndarray, head_dim: int, rope_theta: float) -> dict:
    """Llama-3.1 style rope scaling, recovered from llama.cpp's per-frequency divisors.

    llama.cpp stores only the divisors (rope_freqs.weight); Hugging Face describes them by four
    numbers. Every Llama 3.x release uses low/high frequency factors 1 and 4 around an original
    context of 8192, so those are checked against the tensor rather than solved for.
    """
    scaling = {
        "rope_type": "llama3",
        "factor": _f32(float(rope_freqs.max())),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    if not np.allclose(llama3_rope_divisors(scaling, head_dim, rope_theta), rope_freqs, rtol=1e-3):
        raise ValueError("rope_freqs.weight holds rope scaling factors that match no known Llama-3 scaling")
    return scaling


def llama3_rope_divisors(scaling: dict, head_dim: int, rope_theta: float) -> np.ndarray:
    """What each rotary frequency is divided by under Llama-3 scaling (llama.cpp's rope_freqs)."""
    inv_freq = 1.0 / rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    original, low, high = (
        scaling["original_max_position_embeddings"],
        scaling["low_freq_factor"],
        scaling["high_freq_factor"],
    )
    smooth = np.clip((original / wavelen - low) / (high - low), 0.0, 1.0)
    # smooth 1 (short wavelengths): unchanged; smooth 0 (long ones): divided by factor.
    return 1.0 / ((1 - smooth) / scaling["factor"] + smooth)


def _eos_ids(reader: GGUFReader) -> list[int]:
    """eos plus end-of-turn / end-of-message ids, which all end a generation."""
    ids: list[int] = []
    for key in ("eos", "eot", "eom"):
        token_id = field_value(reader, f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    return ids


def _hf_weights(tensors, config: dict, arch: _Arch) -> Iterator[tuple[str, torch.Tensor]]:
    for tensor in tensors:
        if tensor.name in _SKIPPED:
            continue
        name = hf_tensor_name(tensor.name)
        weight = dequantize_tensor(tensor)
        if arch.rotary_permuted and name.endswith(("q_proj.weight", "q_proj.bias")):
            weight = unpermute_rotary(weight, config["num_attention_heads"])
        elif arch.rotary_permuted and name.endswith(("k_proj.weight", "k_proj.bias")):
            weight = unpermute_rotary(weight, config["num_key_value_heads"])
        yield name, torch.from_numpy(weight).to(torch.bfloat16)


def hf_tensor_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; `output.weight` -> `lm_head.weight`.

    Unknown names (MoE experts, extra norms) raise ValueError: dropping them would give a wrong model.
    """
    base, _, suffix = gguf_name.rpartition(".")
    parts = base.split(".")
    if len(parts) == 1 and parts[0] in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[parts[0]]}.{suffix}"
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face Llama equivalent")


def dequantize_tensor(tensor: ReaderTensor) -> np.ndarray:
    """float32 array in PyTorch's (rows, columns) order, whatever the tensor's GGML type."""
    try:
        values = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as error:
        raise ValueError(
            f"GGUF tensor {tensor.name!r} has type {tensor.tensor_type.name}, which cannot be dequantized"
        ) from error
    shape = tuple(int(d) for d in reversed(tensor.shape))
    return np.array(values, dtype=np.float32, copy=True).reshape(shape)


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation.

    Within each head of head_dim rows, Hugging Face order is [x0 .. x(d/2-1) | y0 .. y(d/2-1)]
    (the two rotated halves); llama.cpp stores the pairs interleaved: [x0 y0 x1 y1 ...].
        llama.cpp rows per head: (head_dim/2, 2)  --swap-->  HF rows per head: (2, head_dim/2)
    """
    head_dim = weight.shape[0] // num_heads
    rest = weight.shape[1:]
    # (num_heads, head_dim/2, 2, *rest) -> (num_heads, 2, head_dim/2, *rest)
    return weight.reshape(num_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def _write_safetensors(weights: Iterator[tuple[str, torch.Tensor]], out_dir: Path) -> None:
    """model.safetensors, or shards of at most MAX_SHARD_BYTES plus model.safetensors.index.json."""
    shards: list[list[str]] = []
    current: dict[str, torch.Tensor] = {}
    current_bytes = 0
    for name, tensor in weights:
        size = tensor.numel() * tensor.element_size()
        if current and current_bytes + size > MAX_SHARD_BYTES:
            shards.append(_save_shard(current, out_dir, len(shards)))
            current, current_bytes = {}, 0
        current[name] = tensor
        current_bytes += size
    if current:
        shards.append(_save_shard(current, out_dir, len(shards)))
    if len(shards) == 1:
        (out_dir / "shard-0.safetensors").rename(out_dir / "model.safetensors")
        return
    weight_map = {}
    for index, names in enumerate(shards):
        file_name = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        (out_dir / f"shard-{index}.safetensors").rename(out_dir / file_name)
        weight_map.update(dict.fromkeys(names, file_name))
    _write_json(out_dir / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})


def _save_shard(tensors: dict[str, torch.Tensor], out_dir: Path, index: int) -> list[str]:
    save_file(tensors, str(out_dir / f"shard-{index}.safetensors"), metadata={"format": "pt"})
    return list(tensors)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _f32(value: float) -> float:
    """GGUF stores float32: 9.999999747378752e-06 is written back as the 1e-05 it was."""
    return float(str(np.float32(value)))
