"""The fused native decode (all layers in one _C call) against the op-by-op forward.

Both run the same kernels in the same order on the same data, so logits and the KV cache must
be bit-identical, for every model variant (GQA, MHA, MQA, Qwen2 bias, Llama-3 rope, Mistral's
sliding window), in float32 and bfloat16, on the native (AVX-512 or AVX2) and the portable
kernels. Steps the fused path does not take (prefill, more than MAX_TOKENS sequences) must fall
back.
"""

from __future__ import annotations

import pytest
import torch
from swiftserve.kernels import cpp_llama_decode, cpp_ops
from swiftserve.scheduler.batch_scheduler import ScheduledSeq, SchedulerOutput
from swiftserve.scheduler.block_manager import BlockManager
from swiftserve.scheduler.sequence import Sequence

from swiftserve.model_runner.input_batch import prepare_inputs
from swiftserve.model_runner.kv_cache import allocate_kv_cache
from swiftserve.models.llama import LlamaForCausalLM
from swiftserve.models.llama_config import LlamaConfig

from .test_llama import BASE, VARIANTS

pytestmark = pytest.mark.skipif(not cpp_ops.is_available(), reason="swiftserve._C is not built")

ALL_VARIANTS = {
    **VARIANTS,
    "mistral-window": dict(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=6),
}
# head_dim 32: the smallest the native attention is built for (BASE's 16 would fall back).
SIZES = dict(hidden_size=128, intermediate_size=80)
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])


def _model(variant: str, dtype: torch.dtype, num_blocks: int = 64, block_size: int = 4):
    cfg = LlamaConfig.from_hf({**BASE, **SIZES, **ALL_VARIANTS[variant]})
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model = model.to(dtype)
    cache = allocate_kv_cache(cfg, num_blocks, block_size, dtype, torch.device("cpu"))
    for i, attn in enumerate(model.attention_layers()):
        attn.k_cache, attn.v_cache = cache[i, 0], cache[i, 1]
    return model, cache, BlockManager(num_blocks, block_size, enable_prefix_caching=False)


def _step(model, manager, seqs, counts) -> dict[int, torch.Tensor]:
    """One step; the logits of each sequence's last scheduled token, by seq id."""
    out = SchedulerOutput()
    for s, n in zip(seqs, counts, strict=True):
        assert manager.allocate(s, n)
        out.scheduled.append(ScheduledSeq(s, n))
    batch = prepare_inputs(out, manager.block_size, torch.device("cpu"))
    with torch.inference_mode():
        hidden = model(batch.input_ids, batch.positions, batch.meta)
        logits = model.compute_logits(hidden[batch.logits_indices]).float()
    for s, n in zip(seqs, counts, strict=True):
        s.num_computed_tokens += n
    return {item.seq.seq_id: row for item, row in zip(batch.sampling_items, logits, strict=True)}


def _greedy(variant, dtype, prompts, num_steps: int, fused: bool, **kw):
    """Prefill op by op, then greedy-decode all prompts together, fused or op by op."""
    model, cache, manager = _model(variant, dtype, **kw)
    seqs = [Sequence.from_prompt(i, p) for i, p in enumerate(prompts)]
    rows = _step(model, manager, seqs, [len(p) for p in prompts])
    if not fused:
        model.fused_decode = None
    steps = []
    for _ in range(num_steps):
        for s in seqs:
            s.append_token(int(rows[s.seq_id].argmax()))
        rows = _step(model, manager, seqs, [1] * len(seqs))
        steps.append(torch.stack([rows[s.seq_id] for s in seqs]))
    return torch.stack(steps), cache, [s.token_ids for s in seqs]


PROMPTS = [[5, 7, 11], [3] * 17, [42], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2]]


@DTYPES
@pytest.mark.parametrize("variant", list(ALL_VARIANTS))
def test_fused_decode_is_bit_identical(variant, dtype, monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    logits, cache, tokens = _greedy(variant, dtype, PROMPTS, 12, fused=True)
    assert len(calls) == 12
    want_logits, want_cache, want_tokens = _greedy(variant, dtype, PROMPTS, 12, fused=False)
    assert tokens == want_tokens
    assert torch.equal(logits, want_logits)
    assert torch.equal(cache, want_cache)


def test_fused_decode_past_the_linear_threshold_matches(monkeypatch):
    """12 sequences: fused (small-M linear) vs op by op (torch GEMM past 8 rows): equal up to
    fp32 summation order."""
    calls = _count_fused_calls(monkeypatch)
    prompts = [[i + 1, 2 * i + 3, 5] for i in range(12)]
    logits, _, tokens = _greedy("qwen2-bias", torch.float32, prompts, 6, fused=True)
    want_logits, _, want_tokens = _greedy("qwen2-bias", torch.float32, prompts, 6, fused=False)
    assert calls == [12] * 6 and tokens == want_tokens
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.usefixtures("generic_kernels")
@DTYPES
def test_portable_fused_decode_is_bit_identical(dtype, monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    logits, cache, _ = _greedy("qwen2-bias", dtype, PROMPTS[:2], 5, fused=True)
    want_logits, want_cache, _ = _greedy("qwen2-bias", dtype, PROMPTS[:2], 5, fused=False)
    assert len(calls) == 5
    assert torch.equal(logits, want_logits) and torch.equal(cache, want_cache)


def _count_fused_calls(monkeypatch) -> list[int]:
    calls, real = [], cpp_llama_decode.llama_decode_layers
    monkeypatch.setattr(
        cpp_llama_decode, "llama_decode_layers", lambda *a: calls.append(a[1].shape[0]) or real(*a)
    )
    return calls


def test_fused_path_is_taken_only_for_small_decode_steps(monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    many = [[i + 1, i + 2] for i in range(cpp_llama_decode.MAX_TOKENS + 1)]
    _greedy("llama-gqa-tied", torch.float32, many, 2, fused=True, num_blocks=128)
    assert calls == []  # 9 sequences: op by op
    _greedy("llama-gqa-tied", torch.float32, PROMPTS, 3, fused=True)
    assert calls == [len(PROMPTS)] * 3  # prefill op by op, each decode step fused
    calls.clear()
    model, _, manager = _model("llama-gqa-tied", torch.float32)
    down = model.layers[1].mlp.down_proj.weight
    down.data = down.data.t().contiguous().t()  # same values, column-major: the table wants rows
    seqs = [Sequence.from_prompt(0, [1, 2, 3])]
    _step(model, manager, seqs, [3])
    seqs[0].append_token(4)
    _step(model, manager, seqs, [1])  # a weight the table cannot take: op by op, no error
    assert calls == [] and "down" in model.fused_decode.unusable
    backend_model = LlamaForCausalLM(LlamaConfig.from_hf({**BASE, **SIZES}), backend="torch")
    assert backend_model.fused_decode is None  # a named non-cpp backend keeps every op on it


def test_table_follows_moved_weights():
    """Weights re-allocated after a fused step (model.to(...) does this) must not be read stale."""
    model, _, manager = _model("llama-gqa-tied", torch.float32)
    seqs = [Sequence.from_prompt(0, [1, 2, 3])]
    _step(model, manager, seqs, [3])
    seqs[0].append_token(4)
    _step(model, manager, seqs, [1])
    first = model.fused_decode.table
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    seqs[0].append_token(5)
    _step(model, manager, seqs, [1])
    assert first is not None and model.fused_decode.table is not first
    assert (
        model.fused_decode.table.layers[0].qkv.data_ptr()
        == model.layers[0].self_attn.qkv_proj.weight.data_ptr()
    )


def test_bad_step_inputs_raise_value_error():
    model, cache, manager = _model("llama-gqa-tied", torch.float32, num_blocks=8)
    table = model.fused_decode._table(model.layers)
    assert table is not None
    x = torch.zeros(1, SIZES["hidden_size"])
    pos, slots = torch.tensor([3]), torch.tensor([5])
    tables, lens = torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([4], dtype=torch.int32)
    rope = model.layers[0].self_attn.rotary.cos_sin_cache
    run = cpp_llama_decode.llama_decode_layers
    with pytest.raises(ValueError, match="slot_mapping"):
        run(table, x.clone(), pos, torch.tensor([8 * 4]), rope, tables, lens)
    with pytest.raises(ValueError, match="block_tables"):
        run(table, x.clone(), pos, slots, rope, torch.tensor([[0, 99]], dtype=torch.int32), torch.tensor([6]))
    with pytest.raises(ValueError, match="positions"):
        run(table, x.clone(), torch.tensor([10_000]), slots, rope, tables, lens)
    with pytest.raises(ValueError, match="rows"):
        run(table, x.clone(), torch.tensor([3, 4]), slots, rope, tables, lens)
    with pytest.raises(ValueError, match="x must be"):
        run(table, x.double(), pos, slots, rope, tables, lens)
    run(table, x.clone(), pos, slots, rope, tables, lens)  # the same step, valid, still runs
