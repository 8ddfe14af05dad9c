"""The Gemma 3 decoder against transformers' Gemma3ForCausalLM on tiny random models, float32.

The sliding window (4) is shorter than the prompts, so local layers see only part of the context,
and layer_types mix local and global layers with different rope bases. Prompts run through the
paged cache in chunks, mixed into one batch; logits must match transformers' at every position.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from swiftserve.scheduler.batch_scheduler import ScheduledSeq, SchedulerOutput
from swiftserve.scheduler.block_manager import BlockManager
from swiftserve.scheduler.sequence import Sequence

from swiftserve.loader.model_source import ModelSource
from swiftserve.model_runner.input_batch import prepare_inputs
from swiftserve.model_runner.kv_cache import allocate_kv_cache
from swiftserve.model_runner.model_loader import load_model
from swiftserve.models.gemma3 import Gemma3ForCausalLM
from swiftserve.models.gemma3_config import Gemma3Config

TINY = dict(
    vocab_size=101,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    sliding_window=4,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    query_pre_attn_scalar=24,
    tie_word_embeddings=True,
)
VARIANTS = {
    "base": {},
    "softcap-linear-rope": dict(
        final_logit_softcapping=3.0, rope_scaling={"rope_type": "linear", "factor": 4.0}
    ),
}


def _hf_model(variant: str):
    torch.manual_seed(0)
    config = transformers.Gemma3TextConfig(**TINY, **VARIANTS[variant])
    model = transformers.Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # transformers starts norms at 0 (a scale of 1): randomize them to test the +1
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0, 0.3)
    return model, config.to_dict() | {"architectures": ["Gemma3ForCausalLM"]}


def _bind_cache(model, num_blocks: int = 64, block_size: int = 4) -> BlockManager:
    cache = allocate_kv_cache(model.config, num_blocks, block_size, torch.float32, torch.device("cpu"))
    for i, attn in enumerate(model.attention_layers()):
        attn.k_cache, attn.v_cache = cache[i, 0], cache[i, 1]
    return BlockManager(num_blocks, block_size, enable_prefix_caching=False)


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
            all_logits = model.compute_logits(model(batch.input_ids, batch.positions, batch.meta))
        offset = 0
        for item in batch.order:
            logits[item.seq.seq_id].append(all_logits[offset : offset + item.num_new_tokens])
            offset += item.num_new_tokens
            item.seq.num_computed_tokens += item.num_new_tokens
    return [torch.cat(rows) for rows in logits]


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, TINY["vocab_size"], (n,), generator=gen).tolist() for n in (1, 5, 17, 40)]


def _assert_matches(model, hf_model, chunk: int) -> None:
    manager = _bind_cache(model)
    for prompt, got in zip(_prompts(), _run_chunked(model, manager, _prompts(), chunk), strict=True):
        with torch.no_grad():
            want = hf_model(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_logits_match_transformers(variant: str, chunk: int) -> None:
    hf_model, hf_config = _hf_model(variant)
    model = Gemma3ForCausalLM(Gemma3Config.from_hf(hf_config)).eval()
    model.load_weights(hf_model.state_dict().items())
    _assert_matches(model, hf_model, chunk)


def test_dummy_weights_match_transformers() -> None:
    """load_format="dummy" builds a working Gemma 3: the same random weights in transformers agree."""
    hf_model, hf_config = _hf_model("base")
    cpu = torch.device("cpu")
    source = ModelSource("tiny", Path("tiny"), "chat", hf_config)
    model = load_model(source, torch.float32, cpu, load_format="dummy", seed=3)
    result = hf_model.load_state_dict(_to_hf_state(model), strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied
    _assert_matches(model, hf_model, chunk=5)


def _to_hf_state(model: Gemma3ForCausalLM) -> dict[str, torch.Tensor]:
    """Our parameters under transformers' names: q/k/v and gate/up split again, norms back to weight - 1."""
    cfg, state = model.config, {}
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    for name, param in model.named_parameters():
        hf_name = f"model.{name}"
        if name.endswith("qkv_proj.weight"):
            for part, tensor in zip(("q", "k", "v"), param.data.split((q, kv, kv)), strict=True):
                state[hf_name.replace("qkv_proj", f"{part}_proj")] = tensor
        elif name.endswith("gate_up_proj.weight"):
            gate, up = param.data.chunk(2)
            state[hf_name.replace("gate_up_proj", "gate_proj")] = gate
            state[hf_name.replace("gate_up_proj", "up_proj")] = up
        elif name.endswith("norm.weight"):
            state[hf_name] = param.data - 1.0
        elif name != "lm_head.weight":  # tied to embed_tokens
            state[hf_name] = param.data
    return state


def test_layer_pattern_and_rope_from_older_config() -> None:
    cfg = Gemma3Config.from_hf(
        dict(TINY, num_hidden_layers=12, layer_types=None, rope_scaling={"type": "linear", "factor": 8.0})
    )
    assert cfg.is_sliding == (True,) * 5 + (False,) + (True,) * 5 + (False,)
    assert (cfg.rope_theta, cfg.rope_local_theta) == (1_000_000.0, 10_000.0)
    assert cfg.rope_scaling["rope_type"] == "linear"


def test_attention_softcapping_is_refused() -> None:
    with pytest.raises(ValueError, match="attn_logit_softcapping"):
        Gemma3Config.from_hf(dict(TINY, attn_logit_softcapping=50.0))
