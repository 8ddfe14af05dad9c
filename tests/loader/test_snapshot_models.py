"""Real models from their snapshots: the same greedy tokens, logits and embeddings as from their
original sources (SmolLM2, Gemma 3, MiniLM), the same tokenizer and template, and a snapshot is a
model source everywhere (LLM, served models, kind detection, the CLI)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

import numpy as np
import pytest
import torch

from swiftserve import LLM, SamplingParams
from swiftserve.engine.embedding_engine import EmbeddingEngine
from swiftserve.engine.snapshot_export import export_snapshot
from swiftserve.loader import load_config, load_tokenizer, resolve_model
from swiftserve.loader.snapshot_errors import SnapshotMismatchError, SnapshotMissingTensorError

from .snapshot_factory import drop_entry, is_mapped, replace_entry, rewrite_header

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Once upon a time, in a small village by the sea, there lived an old fisherman who " * 3,
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
CHAT = [{"role": "user", "content": "Name three colours of the rainbow."}]
SENTENCES = ["Hello world", "x", "The quick brown fox jumps over the lazy dog. " * 40]
CPU = dict(device="cpu", max_model_len=512, kv_cache_memory=32 << 20)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("snapshots")
    return {
        "smollm": export_snapshot("smollm2-135m-instruct", folder / "smollm.swsnap", dtype="float32"),
        "minilm": export_snapshot("all-minilm-l6-v2", folder / "minilm.swsnap"),
    }


def _greedy_with_logits(llm: LLM) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy tokens of every prompt and the float32 logits of every step."""
    runner = llm.engine.runner
    logits: list[torch.Tensor] = []
    compute = runner.compute_logits

    def recording(hidden):
        out = compute(hidden)
        logits.append(out.clone())
        return out

    runner.compute_logits = recording
    tokens = [out.outputs[0].token_ids for out in llm.generate(PROMPTS, GREEDY)]
    return tokens, logits


def _check_same_model(a: LLM, b: LLM) -> None:
    tokens_a, logits_a = _greedy_with_logits(a)
    tokens_b, logits_b = _greedy_with_logits(b)
    assert tokens_a == tokens_b
    assert len(logits_a) == len(logits_b) > 0
    for step, (x, y) in enumerate(zip(logits_a, logits_b, strict=True)):
        assert torch.equal(x, y), f"logits differ at step {step}"
    prompt_a = a.chat_prompt_ids(CHAT)
    assert prompt_a == b.chat_prompt_ids(CHAT)  # tokenizer and chat template from the snapshot


def test_smollm2_snapshot_matches_its_source(smollm_dir, snapshots):
    source = LLM(str(smollm_dir), dtype="float32", **CPU)
    snap = LLM(str(snapshots["smollm"]), dtype="float32", **CPU)
    model = snap.engine.runner.model
    assert model.lm_head.weight is model.embed_tokens.weight  # tied again after assign
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
    _check_same_model(source, snap)
    info_a, info_b = source.tokenizer, snap.tokenizer
    assert (info_a.eos_token_ids, info_a.bos_token_id, info_a.special_token_ids) == (
        info_b.eos_token_ids,
        info_b.bos_token_id,
        info_b.special_token_ids,
    )


def test_smollm2_bfloat16_snapshot_matches_its_source(smollm_dir, tmp_path):
    path = export_snapshot(str(smollm_dir), tmp_path / "bf16.swsnap")  # auto: bfloat16
    snap = LLM(str(path), **CPU)  # dtype auto: bfloat16, as stored (no cast)
    assert snap.engine.runner.model.embed_tokens.weight.dtype == torch.bfloat16
    _check_same_model(LLM(str(smollm_dir), dtype="bfloat16", **CPU), snap)


def test_gemma3_snapshot_matches_its_source(tmp_path):
    gemma_dir = resolve_model("gemma-3-270m", progress=False)
    path = export_snapshot("gemma-3-270m", tmp_path / "gemma.swsnap", dtype="float32")
    _check_same_model(LLM(str(gemma_dir), dtype="float32", **CPU), LLM(str(path), dtype="float32", **CPU))


def test_minilm_snapshot_matches_its_source(minilm_dir, snapshots):
    source = EmbeddingEngine(str(minilm_dir))
    snap = EmbeddingEngine(str(snapshots["minilm"]))
    assert snap.max_seq_length == source.max_seq_length == 256
    assert snap.model.pooling == source.model.pooling
    a, b = source.embed_sync(SENTENCES), snap.embed_sync(SENTENCES)
    assert np.array_equal(a.embeddings, b.embeddings)
    assert a.num_prompt_tokens == b.num_prompt_tokens


def test_a_snapshot_cast_at_load_matches_the_source_in_that_dtype(minilm_dir, snapshots):
    # float32 on disk, served in bfloat16: one cast, the same rounding as loading the folder in bf16.
    source = EmbeddingEngine(str(minilm_dir), dtype="bfloat16")
    snap = EmbeddingEngine(str(snapshots["minilm"]), dtype="bfloat16")
    assert snap.model.word_embeddings.weight.dtype == torch.bfloat16
    assert np.array_equal(source.embed_sync(SENTENCES).embeddings, snap.embed_sync(SENTENCES).embeddings)


def test_a_snapshot_is_a_model_source_everywhere(smollm_dir, minilm_dir, snapshots):
    from swiftserve.router.registry import ModelSpec, detect_kind

    from swiftserve.engine.footprint import chat_footprint, encoder_footprint

    smollm, minilm = snapshots["smollm"], snapshots["minilm"]
    assert resolve_model(str(smollm)) == smollm
    assert detect_kind(str(smollm)) == "chat" and detect_kind(str(minilm)) == "embedding"
    assert ModelSpec.parse(f"small={smollm}") == ModelSpec("small", str(smollm), "chat")
    assert ModelSpec.parse(str(minilm)).served_name == "minilm"
    assert load_config(smollm) == load_config(smollm_dir)
    assert load_tokenizer(minilm).vocab_size == load_tokenizer(minilm_dir).vocab_size
    args = (torch.float32, 16, 512)
    assert chat_footprint(smollm, load_config(smollm), *args) == chat_footprint(
        smollm_dir, load_config(smollm_dir), *args
    )
    # The folder also holds tensors an encoder drops (BERT's pooler): the snapshot counts what loads.
    model = EmbeddingEngine(str(minilm_dir)).model
    num_params = sum(p.numel() for p in model.parameters())
    assert encoder_footprint(minilm, torch.float32).weight_bytes == num_params * 4


def test_a_fresh_process_loads_a_snapshot_off_the_slow_paths(snapshots):
    # Initializing or computing on meta would import torch._dynamo (~1.5 s) on the cold-start path.
    script = (
        "import sys, torch\n"
        "from swiftserve.loader.model_source import resolve_source\n"
        "from swiftserve.model_runner.model_loader import load_model\n"
        f"source = resolve_source({str(snapshots['smollm'])!r})\n"
        "model = load_model(source, torch.float32, torch.device('cpu'))\n"
        "assert not any(p.is_meta for p in model.parameters())\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_served_chat_model_from_a_snapshot(snapshots):
    from swiftserve.config import EngineConfig
    from swiftserve.engine.chat_model import LocalChatModel
    from swiftserve.engine.device_executor import DeviceExecutor

    executor = DeviceExecutor("snapshot-test")
    executor.start()
    config = EngineConfig(model=str(snapshots["smollm"]), dtype="float32", **CPU)
    want = LLM(str(snapshots["smollm"]), dtype="float32", **CPU).generate([PROMPTS[0]], GREEDY)

    async def run() -> list[int]:
        model = LocalChatModel("smol", config, executor)
        await model.load()
        try:
            outputs = [o async for o in model.generate(PROMPTS[0], GREEDY)]
        finally:
            await model.unload()
        return outputs[-1].outputs[0].token_ids

    try:
        assert asyncio.run(run()) == want[0].outputs[0].token_ids
    finally:
        executor.stop()


def test_a_config_file_serves_snapshots(snapshots, tmp_path):
    from swiftserve import Server

    config = tmp_path / "swiftserve.yaml"
    config.write_text(
        "models:\n"
        f"  - {{name: chat, source: {snapshots['smollm']}, policy: pinned, dtype: float32,\n"
        "      max_model_len: 512}\n"
        f"  - {{name: embed, source: {snapshots['minilm']}, policy: on-demand}}\n"
    )
    want = LLM(str(snapshots["smollm"]), dtype="float32", **CPU).generate([PROMPTS[0]], GREEDY)
    want_vectors = EmbeddingEngine(str(snapshots["minilm"])).embed_sync(SENTENCES).embeddings

    async def run():
        async with Server.from_config(config) as server:
            reply = await server.complete("chat", PROMPTS[0], max_tokens=24, temperature=0, ignore_eos=True)
            vectors = (await server.embed("embed", SENTENCES)).embeddings
            return reply.choices[0].token_ids, vectors

    token_ids, vectors = asyncio.run(run())
    assert token_ids == want[0].outputs[0].token_ids
    assert np.array_equal(np.asarray(vectors), want_vectors)


def test_a_damaged_model_snapshot_leaves_nothing_loaded(snapshots, tmp_path):
    path = tmp_path / "broken.swsnap"
    path.write_bytes(snapshots["smollm"].read_bytes())
    rewrite_header(path, lambda h: drop_entry(h, "layers.3.mlp.down_proj.weight"))
    with pytest.raises(SnapshotMissingTensorError) as info:
        LLM(str(path), dtype="float32", **CPU)
    assert info.value.tensor == "layers.3.mlp.down_proj.weight" and info.value.path == path
    gc.collect()
    assert not is_mapped(path)
    with pytest.raises(SnapshotMismatchError):  # an embedding snapshot where a chat model is expected
        from swiftserve.loader.model_source import resolve_source
        from swiftserve.model_runner.model_loader import load_model

        load_model(resolve_source(snapshots["minilm"]), torch.float32, torch.device("cpu"))
    gc.collect()
    assert not is_mapped(snapshots["minilm"])


def test_a_snapshot_of_another_shape_is_a_mismatch(snapshots, tmp_path):
    path = tmp_path / "other.swsnap"
    path.write_bytes(snapshots["smollm"].read_bytes())
    name = "layers.0.mlp.down_proj.weight"
    rewrite_header(path, lambda h: replace_entry(h, name, shape=h.entries()[name].shape[::-1]))
    with pytest.raises(SnapshotMismatchError) as info:
        LLM(str(path), dtype="float32", **CPU)
    assert info.value.tensor == name and "(1536, 576)" in str(info.value)
    gc.collect()
    assert not is_mapped(path)


def test_cli_writes_a_snapshot(tmp_path, minilm_dir):
    from swiftserve.cli import main

    out = tmp_path / "cli.swsnap"
    assert main(["snapshot", str(minilm_dir), "-o", str(out), "--dtype", "bfloat16"]) == 0
    engine = EmbeddingEngine(str(out), dtype="bfloat16")
    assert engine.model.word_embeddings.weight.dtype == torch.bfloat16
    assert main(["snapshot", str(out), "-o", str(tmp_path / "again.swsnap")]) == 2  # a snapshot already


def test_dtype_auto_serves_a_snapshot_in_the_dtype_it_stores(snapshots, tmp_path, minilm_dir):
    """Was: a float32 chat snapshot cast to bfloat16 (LLM, generate, launch) and a bfloat16 MiniLM
    snapshot cast to float32 by EmbeddingEngine. Folders keep their kind's default."""
    llm = LLM(str(snapshots["smollm"]), **CPU)  # dtype auto
    assert llm.engine.runner.dtype == torch.float32
    assert next(llm.engine.runner.model.parameters()).dtype == torch.float32
    bf16 = export_snapshot("all-minilm-l6-v2", tmp_path / "minilm-bf16.swsnap", dtype="bfloat16")
    engine = EmbeddingEngine(str(bf16))
    assert engine.dtype == torch.bfloat16
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    assert EmbeddingEngine(str(minilm_dir)).dtype == torch.float32  # a folder: float32


def test_an_explicit_dtype_still_casts_a_snapshot(snapshots):
    llm = LLM(str(snapshots["smollm"]), dtype="bfloat16", **CPU)
    assert next(llm.engine.runner.model.parameters()).dtype == torch.bfloat16


def test_a_model_of_the_other_kind_is_named_as_such(minilm_dir, smollm_dir):
    from swiftserve.loader.model_source import WrongModelKindError

    with pytest.raises(WrongModelKindError, match="is an embedding model, not a chat model"):
        LLM(str(minilm_dir), **CPU)
    with pytest.raises(WrongModelKindError, match="is a chat model, not an embedding model"):
        EmbeddingEngine(str(smollm_dir))
