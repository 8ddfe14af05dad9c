"""Frozen, validated configuration of one model's engine."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from swiftserve.scheduler.config import SchedulerConfig

# What a model serves: generation ("chat": /v1/chat/completions, /v1/completions) or vectors
# ("embedding": /v1/embeddings). loader/model_kind.py tells which a model is.
ModelKind = Literal["chat", "embedding"]
KINDS: tuple[str, ...] = ("chat", "embedding")
# The serving dtypes, as every config and flag spells them; loader/dtypes.py decides what "auto" is.
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
_LOAD_FORMATS = ("auto", "dummy")


DEFAULT_GRAMMAR_COMPILE_TIMEOUT_S = 10.0
# Where a step fills its grammar masks: "auto" beside the forward when a core is free for it, else
# after it; "on" / "off" always / never beside (model_runner/grammar/overlap_policy.py).
MASK_OVERLAP_MODES: tuple[str, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class EngineConfig:
    """Everything one engine needs; several engines with different configs share a process.

    kv_cache_memory is the most this model's KV cache may hold (on CPU it is reserved, and
    committed only as blocks are used; under a memory budget the router grants blocks within it
    as demand asks); None takes a default of 512 MiB. max_model_len None takes the model's own limit,
    as far as kv_cache_memory holds one sequence of it.
    dtype "auto" is a snapshot's stored dtype, else bfloat16 for chat models and float32 for
    embedding models (loader/dtypes.py). device "auto" is cuda when available, else cpu.
    seed seeds the engine's generator for requests that set no seed of their own (and a dummy
    load's weights): None draws fresh entropy on every load, so a restart or a scale from zero
    does not repeat the last load's samples; an int makes them repeat, for reproducible runs.
    snapshot_cache is a folder for automatic snapshots of chat and embedding models
    (loader/snapshot_cache.py): the first load from a folder, GGUF or alias writes one, later loads
    read it; None: off.
    """

    model: str
    dtype: str = "auto"
    device: str = "auto"
    kv_cache_memory: int | None = None
    max_model_len: int | None = None
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    seed: int | None = None
    load_format: str = "auto"
    kernel_backend: str | None = None
    cache_dir: str | None = None
    snapshot_cache: str | None = None
    # How long a request waits for its constraint (JSON schema, grammar) to compile before a 400.
    grammar_compile_timeout_s: float = DEFAULT_GRAMMAR_COMPILE_TIMEOUT_S
    grammar_mask_overlap: str = "auto"
    # Feed the tokens a grammar forces as one chunk instead of a decode step each (fast_forward.py):
    # on, as measured (benchmarks/fast_forward_ab.py, SmolLM2, long JSON keys: 27 steps instead of
    # 93 for the same 93 tokens and the same text, 78 s instead of 142 s on a shared, loaded host).
    grammar_fast_forward: bool = True

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty alias, folder or .gguf path")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.load_format not in _LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {_LOAD_FORMATS}, got {self.load_format!r}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be positive bytes, got {self.kv_cache_memory}")
        if not self.grammar_compile_timeout_s > 0:
            raise ValueError(f"grammar_compile_timeout_s must be > 0, got {self.grammar_compile_timeout_s}")
        if self.grammar_mask_overlap not in MASK_OVERLAP_MODES:
            raise ValueError(
                f"grammar_mask_overlap must be one of {MASK_OVERLAP_MODES}, got {self.grammar_mask_overlap!r}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")

    @classmethod
    def of(cls, model: str, **fields_: Any) -> EngineConfig:
        """An EngineConfig from keyword fields, SchedulerConfig's among them (max_num_seqs,
        max_num_waiting, ...): the keyword face of LLM and EmbeddingEngine."""
        scheduler = {k: fields_.pop(k) for k in list(fields_) if k in _SCHEDULER_FIELDS}
        if scheduler:
            fields_["scheduler"] = SchedulerConfig(**scheduler)
        return cls(model=model, **fields_)


_SCHEDULER_FIELDS = frozenset(f.name for f in fields(SchedulerConfig))
