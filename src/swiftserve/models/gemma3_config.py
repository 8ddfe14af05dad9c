"""The shape of a Gemma 3 text decoder, read from a Hugging Face config.json (model_type gemma3_text)."""

from __future__ import annotations

from dataclasses import dataclass

GEMMA3_ARCHITECTURES = ("Gemma3ForCausalLM",)
GEMMA3_MODEL_TYPES = ("gemma3_text",)
# Gemma 3 interleaves five sliding-window layers with one global layer unless layer_types says otherwise.
_SLIDING_WINDOW_PATTERN = 6
_DEFAULT_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}


@dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float  # global (full attention) layers
    rope_scaling: dict | None  # global layers only; local layers never scale
    rope_local_theta: float  # sliding-window layers
    max_position_embeddings: int
    sliding_window: int
    is_sliding: tuple[bool, ...]  # per layer
    query_pre_attn_scalar: float
    final_logit_softcapping: float | None
    attention_bias: bool
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if len(self.is_sliding) != self.num_layers:
            raise ValueError(f"{len(self.is_sliding)} layer types for {self.num_layers} layers")
        if self.sliding_window < 1:
            raise ValueError(f"sliding_window must be positive, got {self.sliding_window}")

    @classmethod
    def from_hf(cls, cfg: dict) -> Gemma3Config:
        arch = (cfg.get("architectures") or ["Gemma3ForCausalLM"])[0]
        if arch not in GEMMA3_ARCHITECTURES:
            supported = ", ".join(GEMMA3_ARCHITECTURES)
            raise ValueError(f"unsupported architecture {arch!r}; supported: {supported}")
        # The paged attention kernels have no score softcapping; no released Gemma 3 uses it.
        if cfg.get("attn_logit_softcapping") is not None:
            raise ValueError("Gemma 3 with attn_logit_softcapping is not supported")
        if cfg.get("use_bidirectional_attention"):
            raise ValueError("Gemma 3 with bidirectional attention (an embedding model) is not supported")
        heads, num_layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
        full, local = _rope_parameters(cfg)
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=num_layers,
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or 256,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(full.get("rope_theta", _DEFAULT_THETA["full_attention"])),
            rope_scaling=full if full.get("rope_type", "default") != "default" else None,
            rope_local_theta=float(local.get("rope_theta", _DEFAULT_THETA["sliding_attention"])),
            max_position_embeddings=cfg.get("max_position_embeddings", 131_072),
            sliding_window=cfg.get("sliding_window") or 4096,
            is_sliding=_is_sliding(cfg, num_layers),
            query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar", 256)),
            final_logit_softcapping=cfg.get("final_logit_softcapping"),
            attention_bias=bool(cfg.get("attention_bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        )

    @property
    def num_parameters(self) -> int:
        attn = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        norms = 4 * self.hidden_size + 2 * self.head_dim
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * (attn + mlp + norms) + embed + self.hidden_size


def _rope_parameters(cfg: dict) -> tuple[dict, dict]:
    """(global, local) rope settings. transformers >= 5 writes rope_parameters keyed by layer type;
    older configs rope_theta, rope_scaling and rope_local_base_freq."""
    params = cfg.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full, local = dict(params.get("full_attention") or {}), dict(params.get("sliding_attention") or {})
    else:
        full = dict(cfg.get("rope_scaling") or {})
        full.setdefault("rope_theta", cfg.get("rope_theta", _DEFAULT_THETA["full_attention"]))
        local = {"rope_theta": cfg.get("rope_local_base_freq", _DEFAULT_THETA["sliding_attention"])}
    for rope in (full, local):
        if "type" in rope:
            rope.setdefault("rope_type", rope["type"])
    if local.get("rope_type", "default") != "default":
        raise ValueError(f"rope scaling on Gemma 3's sliding-window layers is not supported: {local}")
    return full, local


def _is_sliding(cfg: dict, num_layers: int) -> tuple[bool, ...]:
    layer_types = cfg.get("layer_types")
    if layer_types is None:
        pattern = cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern")
        pattern = pattern or _SLIDING_WINDOW_PATTERN
        return tuple(bool((i + 1) % pattern) for i in range(num_layers))
    unknown = set(layer_types) - {"sliding_attention", "full_attention"}
    if unknown:
        raise ValueError(f"unknown Gemma 3 layer types {sorted(unknown)}")
    return tuple(t == "sliding_attention" for t in layer_types)
