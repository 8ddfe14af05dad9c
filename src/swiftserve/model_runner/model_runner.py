"""Runs one scheduled step on the device: flatten, forward, sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from swiftserve.config import EngineConfig
from swiftserve.loader.model_source import ModelSource
from swiftserve.model_runner.grammar.interface import GrammarBackend
from swiftserve.model_runner.grammar.mask_worker import MaskFillWorker, MaskWorkerClosedError
from swiftserve.model_runner.grammar.overlap_policy import OverlapPolicy
from swiftserve.model_runner.grammar.step_masks import (
    MaskTimings,
    PendingMasks,
    apply_masks,
    settle,
    start_masks,
)
from swiftserve.model_runner.input_batch import InputBatch, prepare_inputs
from swiftserve.model_runner.kv_cache import num_blocks_for_budget, reserve_kv_cache
from swiftserve.model_runner.logits import float32_logits
from swiftserve.model_runner.model_loader import load_model, resolve_device, serving_torch_dtype
from swiftserve.model_runner.prompt_logprobs import PromptLogprobs, compute_prompt_logprobs
from swiftserve.model_runner.sampler import Sampler, SamplerOutput, SamplingState
from swiftserve.models.gemma3 import Gemma3ForCausalLM
from swiftserve.models.llama import LlamaForCausalLM
from swiftserve.scheduler.output import ScheduledSeq, SchedulerOutput

DEFAULT_KV_CACHE_MEMORY = 512 * 1024**2
# Dummy weights (load_format "dummy") stay the same from load to load without a seed: they stand
# in for a checkpoint, which does not change either.
_DUMMY_WEIGHTS_SEED = 0

# A chat model with its weights in place, as load_model returns it.
CausalLM = LlamaForCausalLM | Gemma3ForCausalLM


@dataclass
class StepResult:
    """The tokens one step produced, row i for sampled[i], and the prompt logprobs it scored."""

    sampled: list[ScheduledSeq]
    output: SamplerOutput
    prompt_logprobs: list[PromptLogprobs] = field(default_factory=list)


class ModelRunner:
    """`model`: weights already in place on the config's device and dtype (a reload from host
    memory, engine/host_park.py); without it they load from `folder`. Either way the KV cache,
    sampler and generator are built fresh and bound to the model's attention layers."""

    def __init__(self, config: EngineConfig, source: ModelSource, model: CausalLM | None = None) -> None:
        self.device = resolve_device(config.device)
        self.dtype = serving_torch_dtype(source, config.dtype, self.device)
        self.block_size = config.scheduler.block_size
        self.model = model if model is not None else _load(config, source, self.dtype, self.device)
        self.model_config = self.model.config
        # kv_cache_memory is the most this model's cache may grow to: reserved (CPU) or allocated
        # (CUDA) whole, used as far as the engine's block pool is sized (kv_cache.py).
        budget = config.kv_cache_memory or DEFAULT_KV_CACHE_MEMORY
        num_blocks = num_blocks_for_budget(self.model_config, self.block_size, self.dtype, budget)
        self.kv_cache = reserve_kv_cache(
            self.model_config, num_blocks, self.block_size, self.dtype, self.device
        )
        for i, attn in enumerate(self.model.attention_layers()):
            attn.k_cache, attn.v_cache = self.kv_cache.layer(i)
        # The engine's own RNG for unseeded random rows: no other model (or torch.manual_seed)
        # moves it; reproducible from config.seed when one is set, else fresh on every load.
        self.generator = _engine_generator(self.device, config.seed)
        self.sampler = Sampler(self.model_config.vocab_size, self.generator)
        self.mask_timings = MaskTimings()
        self.mask_overlap = OverlapPolicy(config.grammar_mask_overlap)
        self.mask_worker = MaskFillWorker()  # its thread starts with the first overlapped fill

    @property
    def max_num_blocks(self) -> int:
        """The most KV blocks this runner's cache can hold."""
        return self.kv_cache.num_blocks

    def close(self) -> None:
        """Stops the mask fill thread; a later step fills its masks after the forward."""
        self.mask_worker.close()

    def release_kv_blocks(self, first_block: int, end_block: int) -> None:
        """Hand back the memory of blocks [first_block, end_block), which no sequence holds (CPU)."""
        self.kv_cache.release(first_block, end_block)

    @torch.inference_mode()
    def run(
        self,
        out: SchedulerOutput,
        states: dict[int, SamplingState],
        grammar_backend: GrammarBackend | None = None,
    ) -> StepResult:
        """Forward the step; sample a token for every item that reached its sequence's end.
        grammar_backend fills the masks of rows with a grammar (the engine's, once it has one)."""
        batch = prepare_inputs(out, self.block_size, self.device)
        rows = [states[item.seq.seq_id] for item in batch.sampling_items]
        masks = self._start_masks(rows, grammar_backend)
        try:
            return self._forward_and_sample(batch, states, rows, masks)
        finally:
            settle(masks)  # a forward that raised: its fill ends before the step does

    def _forward_and_sample(
        self,
        batch: InputBatch,
        states: dict[int, SamplingState],
        rows: list[SamplingState],
        masks: PendingMasks | None,
    ) -> StepResult:
        hidden = self.model(batch.input_ids, batch.positions, batch.meta)
        prompt_logprobs = compute_prompt_logprobs(batch.order, hidden, states, self.compute_logits)
        if not batch.sampling_items:
            return StepResult([], SamplerOutput([], []), prompt_logprobs)
        logits = self.compute_logits(hidden[batch.logits_indices])
        apply_masks(logits, masks, self.mask_timings)
        return StepResult(batch.sampling_items, self.sampler(logits, rows), prompt_logprobs)

    def _start_masks(self, rows: list[SamplingState], backend: GrammarBackend | None) -> PendingMasks | None:
        """Starts the constrained rows' fill: beside the forward where a core is free for it."""
        if not any(state.grammar is not None for state in rows):
            return None
        beside = not self.mask_worker.is_closed and self.mask_overlap.should_overlap()
        try:
            return start_masks(rows, backend, self.mask_worker if beside else None)
        except MaskWorkerClosedError:  # closed from another thread just now: fill here instead
            return start_masks(rows, backend, None)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits [rows, vocab] of final hidden states [rows, hidden] (logits.py)."""
        return float32_logits(self.model.compute_logits(hidden), hidden, self.model.lm_head.weight)


def _load(config: EngineConfig, source: ModelSource, dtype: torch.dtype, device: torch.device) -> CausalLM:
    snapshot_cache = Path(config.snapshot_cache) if config.snapshot_cache else None
    return load_model(
        source,
        dtype,
        device,
        config.load_format,
        config.kernel_backend,
        _DUMMY_WEIGHTS_SEED if config.seed is None else config.seed,
        snapshot_cache=snapshot_cache,
    )


def _engine_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """seed None: torch's nondeterministic seed (std::random_device), a new one per engine."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
