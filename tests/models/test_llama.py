"""The Llama-family decoder against Hugging Face transformers on tiny random models.

Each variant (GQA, MQA, Qwen2 attention bias, untied head, Llama-3 rope scaling) runs prompts
through the paged cache in chunks, mixed into one batch, and its logits must match transformers'
full-sequence logits at every position.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from swiftserve.scheduler.batch_scheduler import ScheduledSeq, SchedulerOutput
from swiftserve.scheduler.block_manager import BlockManager
from swiftserve.scheduler.sequence import Sequence

from swiftserve.model_runner.input_batch import prepare_inputs
from swiftserve.model_runner.kv_cache import allocate_kv_cache
from swiftserve.models.llama import LlamaForCausalLM
from swiftserve.models.llama_config import LlamaConfig

BASE = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)
VARIANTS = {
    "llama-gqa-tied": dict(architectures=["LlamaForCausalLM"], model_type="llama", tie_word_embeddings=True),
    "llama-mha-untied": dict(architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=4),
    "llama-mqa": dict(architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=1),
    "llama3-rope-scaling": dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        rope_theta=500000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=32,
        ),
    ),
    "qwen2-bias": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=False),
}


def _hf_model(variant: str):
    cfg = {**BASE, **VARIANTS[variant]}
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
    config.architectures = cfg["architectures"]
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # random biases so Qwen2's bias path is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    return model, config.to_dict() | {"architectures": cfg["architectures"]}


def _ours(hf_model, hf_config: dict, num_blocks: int = 64, block_size: int = 4):
    model = LlamaForCausalLM(LlamaConfig.from_hf(hf_config)).eval()
    model.load_weights(hf_model.state_dict().items())
    cache = allocate_kv_cache(model.config, num_blocks, block_size, torch.float32, torch.device("cpu"))
    for i, attn in enumerate(model.attention_layers()):
        attn.k_cache, attn.v_cache = cache[i, 0], cache[i, 1]
    return model, BlockManager(num_blocks, block_size, enable_prefix_caching=False)


def _run_chunked(model, manager: BlockManager, prompts: list[list[int]], chunk: int) -> list[torch.Tensor]:
    """Logits at every position, prefilling all prompts together `chunk` tokens at a time."""
    seqs = [Sequence.from_prompt(i, p) for i, p in enumerate(prompts)]
    logits: list[list[torch.Tensor]] = [[] for _ in seqs]
    while any(s.num_uncomputed_tokens for s in seqs):
        out = SchedulerOutput()
        for s in seqs:
            n = min(chunk, s.num_uncomputed_tokens)
            if n and manager.allocate(s, n):
                out.scheduled.append(ScheduledSeq(s, n))
        batch = prepare_inputs(out, manager.block_size, torch.device("cpu"))
        with torch.inference_mode():
            hidden = model(batch.input_ids, batch.positions, batch.meta)
            all_logits = model.compute_logits(hidden)
        offset = 0
        for item in batch.order:
            logits[item.seq.seq_id].append(all_logits[offset : offset + item.num_new_tokens])
            offset += item.num_new_tokens
            item.seq.num_computed_tokens += item.num_new_tokens
    return [torch.cat(rows) for rows in logits]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_logits_match_transformers(variant: str, chunk: int) -> None:
    hf_model, hf_config = _hf_model(variant)
    model, manager = _ours(hf_model, hf_config)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 97, (n,), generator=gen).tolist() for n in (1, 5, 17, 40)]
    ours = _run_chunked(model, manager, prompts, chunk)
    for prompt, got in zip(prompts, ours, strict=True):
        with torch.no_grad():
            want = hf_model(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_missing_weight_is_named() -> None:
    hf_model, hf_config = _hf_model("llama-gqa-tied")
    model = LlamaForCausalLM(LlamaConfig.from_hf(hf_config))
    weights = [(n, t) for n, t in hf_model.state_dict().items() if "layers.1.mlp.up_proj" not in n]
    with pytest.raises(ValueError, match="layers.1.mlp.gate_up_proj"):
        model.load_weights(weights)


def test_wrong_shape_is_named() -> None:
    hf_model, hf_config = _hf_model("llama-gqa-tied")
    model = LlamaForCausalLM(LlamaConfig.from_hf(hf_config))
    weights = [
        (n, t[:-1] if n.endswith("layers.0.self_attn.k_proj.weight") else t)
        for n, t in hf_model.state_dict().items()
    ]
    with pytest.raises(ValueError, match="k_proj.weight.*shape"):
        model.load_weights(weights)


def test_unsupported_architecture() -> None:
    with pytest.raises(ValueError, match="unsupported architecture 'GPT2LMHeadModel'"):
        LlamaConfig.from_hf({**BASE, "architectures": ["GPT2LMHeadModel"]})
