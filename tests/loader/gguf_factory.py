"""Tiny GGUF files written with gguf's own writer, laid out the way llama.cpp's converter does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

HIDDEN, HEADS, KV_HEADS, LAYERS, FFN = 64, 4, 2, 2, 96
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def llama_cpp_permute(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """What llama.cpp's convert_hf_to_gguf.py does to q/k rows (written independently of the loader)."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def byte_tokens() -> list[str]:
    """The 256 byte-level symbols in GPT-2's order, a vocabulary that can spell any text."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def tiny_hf_weights(
    seed: int = 0, tied: bool = True, bias: bool = False, vocab: int | None = None
) -> dict[str, torch.Tensor]:
    """Random Llama weights under Hugging Face names (what the converted folder must contain)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = vocab or len(SPECIALS) + 256 + 2

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.5

    weights = {"model.embed_tokens.weight": rand(vocab, HIDDEN), "model.norm.weight": rand(HIDDEN)}
    if not tied:
        weights["lm_head.weight"] = rand(vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": rand(HIDDEN),
            p + "post_attention_layernorm.weight": rand(HIDDEN),
            p + "self_attn.q_proj.weight": rand(HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": rand(HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": rand(FFN, HIDDEN),
            p + "mlp.up_proj.weight": rand(FFN, HIDDEN),
            p + "mlp.down_proj.weight": rand(HIDDEN, FFN),
        }
        if bias:
            weights |= {
                p + "self_attn.q_proj.bias": rand(HEADS * HEAD_DIM),
                p + "self_attn.k_proj.bias": rand(KV_HEADS * HEAD_DIM),
                p + "self_attn.v_proj.bias": rand(KV_HEADS * HEAD_DIM),
            }
    return weights


_TO_GGUF = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    module, _, suffix = hf_name.rpartition(".")
    if module.startswith("model.layers."):
        _, _, index, rest = module.split(".", 3)
        return f"blk.{index}.{_TO_GGUF[rest]}.{suffix}"
    return f"{_TO_GGUF[module]}.{suffix}"


SPM_PIECES = [
    "▁t",
    "he",
    "▁the",
    "ll",
    "llo",
    "▁he",
    "▁hello",
    "▁w",
    "or",
    "▁wor",
    "ld",
    "▁world",
    "▁▁",
    "in",
    "▁in",
]


def _add_byte_level_vocab(writer: GGUFWriter, tokenizer_model: str) -> None:
    tokens = SPECIALS + byte_tokens() + ["Ġt", "Ġth"]
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(["Ġ t", "Ġt h"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)


def _add_sentencepiece_vocab(writer: GGUFWriter) -> None:
    """A Llama-2 style vocabulary: <unk> <s> </s>, 256 byte tokens, characters, then scored pieces."""
    chars = sorted({c for piece in SPM_PIECES for c in piece} | set("abcdefghijklmnopqrstuvwxyz.,!?"))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + chars + SPM_PIECES
    # Unique scores: characters below every piece, earlier pieces merge first.
    scores = (
        [0.0] * (3 + 256)
        + [-1000.0 - i for i in range(len(chars))]
        + [-float(i) for i in range(len(SPM_PIECES))]
    )
    types = [2, 3, 3] + [6] * 256 + [1] * (len(chars) + len(SPM_PIECES))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def write_tiny_gguf(
    path: Path,
    weights: dict[str, torch.Tensor],
    arch: str = "llama",
    qtype: GGMLQuantizationType = GGMLQuantizationType.F32,
    tokenizer_model: str = "gpt2",
    extra_tensors: dict[str, np.ndarray] | None = None,
    raw_tensors: dict[str, tuple[GGMLQuantizationType, np.ndarray]] | None = None,
) -> Path:
    """A GGUF as llama.cpp's converter writes one: permuted q/k (llama), 2-D weights in qtype.

    extra_tensors are added as they are; raw_tensors as already quantized blocks of their type.
    """
    writer = GGUFWriter(path, arch=arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    if tokenizer_model == "llama":
        _add_sentencepiece_vocab(writer)
    else:
        _add_byte_level_vocab(writer, tokenizer_model)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in weights.items():
        if arch == "llama" and ".q_proj." in name:
            tensor = llama_cpp_permute(tensor, HEADS)
        elif arch == "llama" and ".k_proj." in name:
            tensor = llama_cpp_permute(tensor, KV_HEADS)
        data = tensor.numpy().astype(np.float32)
        if data.ndim == 2 and qtype != GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name(name), quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name(name), data)
    for name, data in (extra_tensors or {}).items():
        writer.add_tensor(name, data)
    for name, (qtype, blocks) in (raw_tensors or {}).items():
        writer.add_tensor(name, blocks, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
