"""GGUF -> Hugging Face folder: names, un-permuted q/k, dequantization, config, tokenizer files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from swiftserve.loader import iter_weights, load_config, load_tokenizer
from swiftserve.loader.gguf_convert import convert_gguf, llama3_rope_divisors, unpermute_rotary

from .. import gguf_reference
from .gguf_factory import (
    HEAD_DIM,
    HEADS,
    KV_HEADS,
    LAYERS,
    llama_cpp_permute,
    tiny_hf_weights,
    write_tiny_gguf,
)

Q = GGMLQuantizationType


def _converted(tmp_path, **kwargs):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", **kwargs)
    out = tmp_path / "out"
    convert_gguf(gguf_path, out, progress=False)
    return gguf_path, out, dict(iter_weights(out))


def test_f32_weights_round_trip_exactly_up_to_bf16(tmp_path):
    weights = tiny_hf_weights()
    _, out, converted = _converted(tmp_path, weights=weights)
    assert set(converted) == set(weights)
    for name, expected in weights.items():
        assert converted[name].dtype == torch.bfloat16
        # q/k come back in Hugging Face order: llama.cpp's permutation is undone exactly.
        assert torch.equal(converted[name], expected.to(torch.bfloat16)), name


def test_unpermute_inverts_llama_cpp_permute_for_weights_and_biases():
    for shape in [(HEADS * HEAD_DIM, 8), (HEADS * HEAD_DIM,)]:
        original = torch.arange(np.prod(shape), dtype=torch.float32).reshape(shape)
        permuted = llama_cpp_permute(original, HEADS).numpy()
        assert np.array_equal(unpermute_rotary(permuted, HEADS), original.numpy())


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_quantized_tensors_match_gguf_dequantization(tmp_path, qtype):
    gguf_path, _, converted = _converted(tmp_path, weights=tiny_hf_weights(), qtype=qtype)
    stored = {tensor.name: tensor for tensor in GGUFReader(gguf_path).tensors}
    assert stored["blk.1.ffn_up.weight"].tensor_type == qtype
    expected = dequantize(stored["blk.1.ffn_up.weight"].data, qtype).reshape(96, 64)
    assert torch.equal(converted["model.layers.1.mlp.up_proj.weight"], torch.from_numpy(expected).bfloat16())
    # q is dequantized first, then un-permuted.
    expected_q = dequantize(stored["blk.0.attn_q.weight"].data, qtype).reshape(64, 64)
    expected_q = torch.from_numpy(unpermute_rotary(expected_q, HEADS)).bfloat16()
    assert torch.equal(converted["model.layers.0.self_attn.q_proj.weight"], expected_q)


def test_k_quant_tensors_dequantize(tmp_path):
    # gguf can dequantize K-quants but not write them: store random blocks with small (finite) fp16 scales.
    rng = np.random.default_rng(0)
    weights = tiny_hf_weights()
    raw = {}
    for qtype, type_size, name in [(Q.Q4_K, 144, "up"), (Q.Q6_K, 210, "gate")]:
        del weights[f"model.layers.0.mlp.{name}_proj.weight"]
        raw[f"blk.0.ffn_{name}.weight"] = (qtype, rng.integers(0, 64, (96, type_size), dtype=np.uint8))
    gguf_path = write_tiny_gguf(tmp_path / "k.gguf", weights, raw_tensors=raw)
    convert_gguf(gguf_path, tmp_path / "out", progress=False)
    converted = dict(iter_weights(tmp_path / "out"))
    for name in ("up", "gate"):
        qtype, blocks = raw[f"blk.0.ffn_{name}.weight"]
        expected = torch.from_numpy(dequantize(blocks, qtype)).bfloat16()
        assert expected.shape == (96, 256)
        assert torch.equal(converted[f"model.layers.0.mlp.{name}_proj.weight"], expected)


def test_untied_output_and_config(tmp_path):
    _, out, converted = _converted(tmp_path, weights=tiny_hf_weights(tied=False))
    config = load_config(out)
    assert "lm_head.weight" in converted
    assert config["tie_word_embeddings"] is False
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        LAYERS,
        HEADS,
        KV_HEADS,
    )
    assert (
        config["head_dim"] == HEAD_DIM and config["rms_norm_eps"] == 1e-5 and config["rope_theta"] == 10000.0
    )
    assert config["max_position_embeddings"] == 512 and config["vocab_size"] == 3 + 256 + 2
    assert config["torch_dtype"] == "bfloat16" and config["bos_token_id"] == 1 and config["eos_token_id"] == 2
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}


def test_llama3_rope_freqs_become_rope_scaling(tmp_path):
    """llama.cpp's rope_freqs divisors -> a rope_scaling that gives transformers the same frequencies."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    scaling["original_max_position_embeddings"] = 8192
    divisors = llama3_rope_divisors(scaling, HEAD_DIM, 10000.0).astype(np.float32)
    assert divisors.min() == pytest.approx(1.0) and divisors.max() == pytest.approx(32.0)
    _, out, converted = _converted(
        tmp_path, weights=tiny_hf_weights(), extra_tensors={"rope_freqs.weight": divisors}
    )
    assert "rope_freqs.weight" not in converted
    config = transformers.AutoConfig.from_pretrained(out)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    base = 1.0 / 10000.0 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    np.testing.assert_allclose(inv_freq.numpy(), base / divisors, rtol=1e-5)

    odd = tmp_path / "odd"
    odd.mkdir()
    with pytest.raises(ValueError, match="rope_freqs"):
        _converted(odd, weights=tiny_hf_weights(), extra_tensors={"rope_freqs.weight": divisors**0.5})


def test_tied_embeddings_write_no_lm_head(tmp_path):
    _, out, converted = _converted(tmp_path, weights=tiny_hf_weights(tied=True))
    assert "lm_head.weight" not in converted
    assert load_config(out)["tie_word_embeddings"] is True


def test_qwen2_biases_are_kept_and_not_permuted(tmp_path):
    weights = tiny_hf_weights(bias=True)
    _, out, converted = _converted(tmp_path, weights=weights, arch="qwen2")
    config = load_config(out)
    assert config["model_type"] == "qwen2" and config["attention_bias"] is True
    for name, expected in weights.items():
        assert torch.equal(converted[name], expected.to(torch.bfloat16)), name


def test_tokenizer_files(tmp_path):
    _, out, _ = _converted(tmp_path, weights=tiny_hf_weights())
    info = load_tokenizer(out)
    assert (info.bos_token, info.eos_token, info.eos_token_ids) == ("<|im_start|>", "<|im_end|>", (2,))
    assert info.special_token_ids == frozenset({0, 1, 2})
    ids = info.encode("<|im_start|>the 42 héllo<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert info.decode(ids, skip_special_tokens=False) == "<|im_start|>the 42 héllo<|im_end|>"
    assert info.decode(ids) == "the 42 héllo"
    assert info.chat_template is not None


def test_unsupported_tensor_type_names_tensor_and_type(tmp_path):
    weights = tiny_hf_weights()
    del weights["model.layers.0.input_layernorm.weight"]
    extra = {"blk.0.attn_norm.weight": np.zeros(64, np.int32)}
    gguf_path = write_tiny_gguf(tmp_path / "bad.gguf", weights, extra_tensors=extra)
    with pytest.raises(ValueError, match=r"blk\.0\.attn_norm\.weight.*I32"):
        convert_gguf(gguf_path, tmp_path / "out", progress=False)


def test_unknown_tensor_name_raises(tmp_path):
    gguf_path = write_tiny_gguf(
        tmp_path / "bad.gguf",
        tiny_hf_weights(),
        extra_tensors={"blk.0.ffn_gate_exps.weight": np.zeros(8, np.float32)},
    )
    with pytest.raises(ValueError, match="ffn_gate_exps"):
        convert_gguf(gguf_path, tmp_path / "out", progress=False)


def test_unsupported_architecture_and_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="architecture 'gemma'"):
        convert_gguf(write_tiny_gguf(tmp_path / "a.gguf", tiny_hf_weights(), arch="gemma"), tmp_path / "a")
    wordpiece = write_tiny_gguf(tmp_path / "b.gguf", tiny_hf_weights(), tokenizer_model="bert")
    with pytest.raises(ValueError, match="tokenizer type 'bert' is not supported"):
        convert_gguf(wordpiece, tmp_path / "b", progress=False)


# ---- the real default model, against transformers' own reading of the GGUF ----


@pytest.fixture(scope="module")
def hf_gguf_model(smollm_gguf, gguf_readings):
    return gguf_readings.model(smollm_gguf)


@pytest.mark.slow
def test_smollm_weights_equal_transformers_gguf_dequantization(smollm_dir, hf_gguf_model):
    ours, theirs = dict(iter_weights(smollm_dir)), hf_gguf_model.state_dict()
    assert set(ours) == set(theirs) - {"lm_head.weight"}  # tied to the embedding
    for name, tensor in ours.items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor, theirs[name].to(torch.bfloat16)), name


@pytest.mark.slow
def test_smollm_config_matches_transformers_reading_of_the_gguf(smollm_dir, hf_gguf_model):
    assert gguf_reference.config_differences(smollm_dir, hf_gguf_model) == {}


@pytest.mark.slow
def test_transformers_loads_converted_folder(smollm_dir, hf_gguf_model):
    """transformers on the converted folder computes what it computes on the GGUF itself."""
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm_dir, dtype=torch.float32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    ids = torch.tensor([[1, 4093, 198, 19556, 905, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        ours, ref = model(ids).logits, hf_gguf_model(ids).logits
    # The same bfloat16-valued weights and the same config: only summation order could differ.
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
