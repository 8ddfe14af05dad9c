"""BERT-family sentence encoder (all-MiniLM-L6-v2 and any Hugging Face BertModel folder).

The forward runs on packed ("varlen") tokens: every linear layer and the MLP see only real
tokens, flat as [num_tokens, hidden]; only attention scatters them into a padded
[batch, heads, max_len, head_dim] block for torch SDPA with a key-padding mask. Pooling
(mean / cls / max / mean_sqrt_len, as sentence-transformers' Pooling module) and the optional
L2 normalization follow the folder's modules.json and 1_Pooling/config.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from swiftserve.loader.snapshot_format import ModelSummary, PoolingSpec

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
_POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
# Checkpoint tensors that a sentence encoder does not use (BertModel's pooler, MLM/NSP heads).
_UNUSED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {sorted(_ACTIVATIONS)}, got {self.hidden_act!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, config: dict) -> BertConfig:
        """Build from a Hugging Face config.json dict (unknown keys are ignored)."""
        position_type = config.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {position_type!r}")
        names = [f for f in cls.__dataclass_fields__ if f in config]
        return cls(**{name: config[name] for name in names})


@dataclass(frozen=True)
class PoolingConfig:
    """The sentence-transformers head: how token states become one vector, and input length."""

    mode: str = "mean"
    normalize: bool = False
    max_seq_length: int = 512

    def __post_init__(self) -> None:
        if self.mode not in _POOLING_MODES:
            raise ValueError(f"pooling mode must be one of {_POOLING_MODES}, got {self.mode!r}")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {self.max_seq_length}")

    @classmethod
    def from_folder(cls, folder: str | Path, max_position_embeddings: int) -> PoolingConfig:
        """Read modules.json, the Pooling module's config and sentence_bert_config.json.

        A plain BertModel folder (no modules.json) gets mean pooling without normalization,
        which is what sentence-transformers builds for it.
        """
        folder = Path(folder)
        mode, normalize = "mean", False
        modules_path = folder / "modules.json"
        if modules_path.is_file():
            modules = json.loads(modules_path.read_text())
            types = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
            normalize = "Normalize" in types
            if "Pooling" in types:
                mode = _pooling_mode(folder / types["Pooling"]["path"] / "config.json")
        max_seq_length = max_position_embeddings
        st_path = folder / "sentence_bert_config.json"
        if st_path.is_file():
            max_seq_length = json.loads(st_path.read_text()).get("max_seq_length") or max_seq_length
        max_seq_length = min(max_seq_length, max_position_embeddings)
        return cls(mode=mode, normalize=normalize, max_seq_length=max_seq_length)


def _pooling_mode(path: Path) -> str:
    """The one enabled mode of a sentence-transformers Pooling config (legacy boolean keys)."""
    if not path.is_file():
        return "mean"
    config = json.loads(path.read_text())
    if isinstance(config.get("pooling_mode"), str):  # newer files name the mode directly
        return config["pooling_mode"].removesuffix("_tokens")
    enabled = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
    if len(enabled) != 1:
        raise ValueError(f"{path}: exactly one pooling mode must be enabled, found {enabled or 'none'}")
    mode = enabled[0].removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
    if mode not in _POOLING_MODES:
        raise ValueError(f"{path}: pooling mode {mode!r} is not supported (one of {_POOLING_MODES})")
    return mode


class _Linear(nn.Linear):
    def reset_parameters(self) -> None:
        pass  # every weight comes from the checkpoint: skip the random init


class _Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class BertLayer(nn.Module):
    """One post-LayerNorm encoder block; q, k and v are fused into one projection."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = _Linear(hidden, 3 * hidden)
        self.attn_out = _Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp_in = _Linear(hidden, config.intermediate_size)
        self.mlp_out = _Linear(config.intermediate_size, hidden)
        self.mlp_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, batch: _PackedBatch) -> torch.Tensor:
        # x: [num_tokens, hidden]
        x = self.attn_norm(x + self.attn_out(self._attention(x, batch)))
        return self.mlp_norm(x + self.mlp_out(self.act(self.mlp_in(x))))

    def _attention(self, x: torch.Tensor, batch: _PackedBatch) -> torch.Tensor:
        qkv = batch.pad(self.qkv(x))  # [batch, max_len, 3 * hidden]
        num_seqs, max_len, _ = qkv.shape
        qkv = qkv.view(num_seqs, max_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=batch.attn_mask)
        out = out.transpose(1, 2).reshape(num_seqs, max_len, -1)  # [batch, max_len, hidden]
        return batch.unpad(out)


class _PackedBatch:
    """Index bookkeeping for one forward over sequences of different lengths.

    Packed tokens of sequences a (3 tokens) and b (1 token), max_len 3:
        flat:    a0 a1 a2 b0            token_index -> padded slot
        padded:  a0 a1 a2 | b0 .  .      slots 0 1 2 3 (slots 4, 5 are padding)
    """

    def __init__(self, seq_lens: list[int], device: torch.device) -> None:
        self.num_seqs = len(seq_lens)
        self.max_len = max(seq_lens)
        lens = torch.tensor(seq_lens, device=device)
        self.seq_lens = lens
        positions = torch.arange(self.max_len, device=device)
        is_real = positions[None, :] < lens[:, None]  # [batch, max_len]
        self.is_real = is_real
        self.is_padded = not bool(is_real.all())
        self.slots = is_real.flatten().nonzero().squeeze(1)  # [num_tokens] slot of each real token
        self.position_ids = positions.expand(self.num_seqs, -1).flatten()[self.slots]
        self.seq_ids = torch.repeat_interleave(torch.arange(self.num_seqs, device=device), lens)
        # Key-padding mask broadcast over heads and queries; None lets SDPA pick its fastest kernel.
        self.attn_mask = is_real[:, None, None, :] if self.is_padded else None

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[num_tokens, d] -> [batch, max_len, d], zeros in the padding."""
        if not self.is_padded:
            return x.view(self.num_seqs, self.max_len, -1)
        out = x.new_zeros(self.num_seqs * self.max_len, x.shape[-1])
        out[self.slots] = x
        return out.view(self.num_seqs, self.max_len, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, max_len, d] -> [num_tokens, d]."""
        x = x.reshape(self.num_seqs * self.max_len, -1)
        return x if not self.is_padded else x[self.slots]


class BertEncoder(nn.Module):
    """BERT encoder plus sentence-transformers pooling: token ids in, one vector per sequence out."""

    def __init__(self, config: BertConfig, pooling: PoolingConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.pooling = pooling or PoolingConfig(max_seq_length=config.max_position_embeddings)
        hidden = config.hidden_size
        self.word_embeddings = _Embedding(config.vocab_size, hidden)
        self.position_embeddings = _Embedding(config.max_position_embeddings, hidden)
        self.token_type_embeddings = _Embedding(config.type_vocab_size, hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @torch.inference_mode()
    def forward(self, token_ids: list[list[int]]) -> torch.Tensor:
        """Embed sequences of token ids (special tokens included); returns float32 [batch, hidden].

        Every sequence must be non-empty and at most max_position_embeddings long; the caller
        truncates to max_seq_length and validates ids (see EmbeddingEngine).
        """
        device = self.word_embeddings.weight.device
        batch = _PackedBatch([len(ids) for ids in token_ids], device)
        flat_ids = torch.tensor([t for ids in token_ids for t in ids], device=device)
        # Single-sentence inputs: token type 0 everywhere.
        x = self.word_embeddings(flat_ids) + self.position_embeddings(batch.position_ids)
        x = self.embed_norm(x + self.token_type_embeddings.weight[0])
        for layer in self.layers:
            x = layer(x, batch)
        return self._pool(x.float(), batch)

    def _pool(self, x: torch.Tensor, batch: _PackedBatch) -> torch.Tensor:
        # x: [num_tokens, hidden] float32 -> [batch, hidden]
        mode = self.pooling.mode
        if mode == "cls":
            starts = torch.cumsum(batch.seq_lens, 0) - batch.seq_lens
            pooled = x[starts]
        elif mode == "max":
            pooled = batch.pad(x).masked_fill(~batch.is_real[..., None], -math.inf).amax(dim=1)
        else:
            sums = x.new_zeros(batch.num_seqs, x.shape[-1]).index_add_(0, batch.seq_ids, x)
            lens = batch.seq_lens.to(x.dtype)[:, None]
            pooled = sums / (lens if mode == "mean" else lens.sqrt())
        return F.normalize(pooled, p=2, dim=-1) if self.pooling.normalize else pooled

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face BertModel tensors (with or without a "bert." prefix) into this module."""
        state: dict[str, torch.Tensor] = {}
        qkv_parts: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for hf_name, tensor in weights:
            name = hf_name.removeprefix("bert.")
            if name.startswith(_UNUSED_PREFIXES):
                continue
            target = _map_hf_name(name)
            if target is None:
                raise ValueError(f"unexpected tensor {hf_name!r} in a BERT checkpoint")
            if isinstance(target, tuple):  # q, k or v: fused below
                layer, part, kind = target
                qkv_parts.setdefault((layer, kind), {})[part] = tensor
            else:
                state[target] = tensor
        for (layer, kind), parts in qkv_parts.items():
            missing = {"query", "key", "value"} - parts.keys()
            if missing:
                raise ValueError(f"layer {layer}: attention {kind} lacks {sorted(missing)}")
            state[f"layers.{layer}.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        expected = dict(self.named_parameters())
        missing = sorted(expected.keys() - state.keys())
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
        for name, tensor in state.items():
            want = tuple(expected[name].shape)
            if tuple(tensor.shape) != want:
                raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)}, model expects {want}")
            with torch.no_grad():
                expected[name].copy_(tensor)


_LAYER_NAMES = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp_in",
    "output.dense": "mlp_out",
    "output.LayerNorm": "mlp_norm",
}
_EMBEDDING_NAMES = {
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embed_norm.weight",
    "embeddings.LayerNorm.bias": "embed_norm.bias",
}


def _map_hf_name(name: str) -> str | tuple[int, str, str] | None:
    """HF name -> our parameter name, or (layer, "query"|"key"|"value", "weight"|"bias")."""
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    # Older checkpoints name LayerNorm parameters gamma / beta.
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    if not name.startswith("encoder.layer."):
        return None
    layer_str, rest = name.removeprefix("encoder.layer.").split(".", 1)
    module, kind = rest.rsplit(".", 1)
    layer = int(layer_str)
    if module.startswith("attention.self."):
        return layer, module.removeprefix("attention.self."), kind
    if module in _LAYER_NAMES:
        return f"layers.{layer}.{_LAYER_NAMES[module]}.{kind}"
    return None


def load_bert_encoder(
    folder: str | Path,
    config: dict,
    weights: Iterable[tuple[str, torch.Tensor]],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> BertEncoder:
    """Build a BertEncoder from a folder's config dict and its (name, tensor) stream."""
    bert_config = BertConfig.from_dict(config)
    pooling = PoolingConfig.from_folder(folder, bert_config.max_position_embeddings)
    with torch.device(device):
        model = BertEncoder(bert_config, pooling).to(dtype)
    model.load_weights(weights)
    return model.eval()


def pooling_spec(model: BertEncoder) -> PoolingSpec:
    """The encoder's head as a snapshot header records it (load_bert_snapshot reads it back)."""
    from swiftserve.loader.snapshot_format import PoolingSpec

    head = model.pooling
    return PoolingSpec(mode=head.mode, normalize=head.normalize, max_seq_length=head.max_seq_length)


def load_bert_snapshot(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    summary: ModelSummary | None = None,
) -> BertEncoder:
    """A BertEncoder from a snapshot file: built on meta, its parameters the snapshot's tensors.
    summary: the snapshot's, when the caller has read it already."""
    from swiftserve.loader.model_kind import kind_model
    from swiftserve.loader.snapshot_errors import SnapshotMismatchError
    from swiftserve.loader.snapshot_modules import build_from_snapshot
    from swiftserve.loader.snapshot_reader import read_index

    meta = summary if summary is not None else read_index(path).meta
    if meta.pooling is None:
        raise SnapshotMismatchError(path, f"{kind_model(meta.kind)}, expected an embedding model")
    spec = meta.pooling
    pooling = PoolingConfig(mode=spec.mode, normalize=spec.normalize, max_seq_length=spec.max_seq_length)
    config = BertConfig.from_dict(meta.hf_config)
    return build_from_snapshot(
        lambda: BertEncoder(config, pooling), path, kind="embedding", dtype=dtype, device=torch.device(device)
    )
