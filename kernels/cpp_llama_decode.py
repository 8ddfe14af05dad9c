"""The 'cpp' backend's fused decode: every decoder layer of a Llama-family model in one _C call.

models/llama.py runs a decode step of a few sequences through this instead of op by op: the
same kernels in the same order (so the same numbers), without ~12 trips through Python per
layer. `LlamaDecodeTable` checks the weights and caches once and keeps their addresses;
`llama_decode_layers` checks the step's inputs and runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from swiftserve.kernels import cpp_native as native

# Decode steps of up to this many sequences run fused. Past 8 rows the small-M linear kernel
# alone is level with oneDNN (kernels/cpp_linear.py), but the ~2.5 ms per step the fused call
# saves in Python keeps it ahead: SmolLM2, bf16, 2 cores, 64-token decodes: 12 sequences 880 vs
# 605 tok/s, 16: 950 vs 720, 24: 1040 vs 905, 32: 1050 vs 1035.
MAX_TOKENS = 32


@dataclass(frozen=True)
class LlamaDecodeDims:
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    rot_dim: int
    eps: float
    scale: float
    sliding_window: int | None
    is_neox: bool


@dataclass
class LlamaLayerTensors:
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [q_size + 2 kv_size, hidden]
    qkv_bias: torch.Tensor | None
    o_proj: torch.Tensor  # [hidden, q_size]
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2 intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor


def unsupported_reason(dims: LlamaDecodeDims, dtype: torch.dtype) -> str | None:
    """Why _C has no fused decode for this shape and dtype, or None."""
    if native._C is None:
        return f"swiftserve._C not built ({native.IMPORT_ERROR})"
    if dims.num_kv_heads <= 0 or dims.num_heads % dims.num_kv_heads:
        return f"{dims.num_heads} query heads are not a multiple of {dims.num_kv_heads} KV heads"
    return native.attention_reason(dtype, dims.head_dim, dims.num_heads // dims.num_kv_heads)


def supports(dims: LlamaDecodeDims, dtype: torch.dtype) -> bool:
    """Whether _C has a fused decode for this shape and dtype."""
    return unsupported_reason(dims, dtype) is None


def _expect(name: str, t: torch.Tensor, shape: tuple, dtype: torch.dtype) -> None:
    if not isinstance(t, torch.Tensor) or not t.is_cpu or t.dtype != dtype:
        raise ValueError(f"llama_decode: {name} must be a CPU {dtype} tensor")
    if tuple(t.shape) != shape or not t.is_contiguous():
        raise ValueError(f"llama_decode: {name} must be contiguous {shape}, got {tuple(t.shape)}")


class LlamaDecodeTable:
    """Every layer's weight and cache addresses, as the int64 table _C reads."""

    def __init__(self, dims: LlamaDecodeDims, layers: list[LlamaLayerTensors]) -> None:
        if not layers:
            raise ValueError("llama_decode: no layers")
        self.dims, self.layers = dims, layers  # holding the tensors keeps the addresses valid
        self.dtype = layers[0].qkv.dtype
        if (reason := unsupported_reason(dims, self.dtype)) is not None:
            raise ValueError(f"llama_decode: no fused decode for {dims} in {self.dtype}: {reason}")
        self.cache_shape = tuple(layers[0].k_cache.shape)
        self.cache_strides = layers[0].k_cache.stride()
        self.table = torch.tensor([self._row(layer) for layer in layers], dtype=torch.int64)
        assert self.table.shape[1] == native._C.llama_layer_fields

    def _row(self, layer: LlamaLayerTensors) -> list[int]:
        d, dt = self.dims, self.dtype
        q, kv = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
        _expect("input_norm", layer.input_norm, (d.hidden,), dt)
        _expect("qkv", layer.qkv, (q + 2 * kv, d.hidden), dt)
        if layer.qkv_bias is not None:
            _expect("qkv_bias", layer.qkv_bias, (q + 2 * kv,), dt)
        _expect("o_proj", layer.o_proj, (d.hidden, q), dt)
        _expect("post_norm", layer.post_norm, (d.hidden,), dt)
        _expect("gate_up", layer.gate_up, (2 * d.intermediate, d.hidden), dt)
        _expect("down", layer.down, (d.hidden, d.intermediate), dt)
        for name in ("k_cache", "v_cache"):
            cache = getattr(layer, name)
            _expect(name, cache, self.cache_shape, dt)
            if cache.shape[2:] != (d.num_kv_heads, d.head_dim):
                raise ValueError(
                    f"llama_decode: {name} {tuple(cache.shape)} does not hold this model's KV heads"
                )
        bias = 0 if layer.qkv_bias is None else layer.qkv_bias.data_ptr()
        return [
            layer.input_norm.data_ptr(),
            layer.qkv.data_ptr(),
            bias,
            layer.o_proj.data_ptr(),
            layer.post_norm.data_ptr(),
            layer.gate_up.data_ptr(),
            layer.down.data_ptr(),
            layer.k_cache.data_ptr(),
            layer.v_cache.data_ptr(),
        ]


def llama_decode_layers(
    table: LlamaDecodeTable,
    x: torch.Tensor,
    positions: torch.Tensor,
    slot_mapping: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs every layer on x [m, hidden] (the embeddings, overwritten): (x, residual) of the last
    layer, for the final norm to add and normalize, exactly as the op-by-op forward leaves them."""
    d, m = table.dims, x.shape[0]
    _expect("x", x, (m, d.hidden), table.dtype)
    native.check_cpu(
        "llama_decode",
        positions=positions,
        slot_mapping=slot_mapping,
        block_tables=block_tables,
        context_lens=context_lens,
    )
    positions = native.int64(positions, "llama_decode: positions")
    slots = native.int64(slot_mapping, "llama_decode: slot_mapping")
    block_tables, context_lens = native.int32(block_tables), native.int32(context_lens)
    if not (positions.shape == slots.shape == context_lens.shape == (m,)) or block_tables.shape[0] != m:
        raise ValueError(
            f"llama_decode: positions, slot_mapping, context_lens and block_tables need {m} rows"
        )
    _expect("cos_sin_cache", cos_sin_cache, (cos_sin_cache.shape[0], d.rot_dim), torch.float32)
    q, kv = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
    residual = torch.empty_like(x)
    scratch = [torch.empty(m, n, dtype=x.dtype) for n in (q + 2 * kv, q, 2 * d.intermediate, d.intermediate)]
    qkv, attn, gate_up, act = (t.data_ptr() for t in scratch)
    num_blocks, block_size = table.cache_shape[:2]
    native.calls.llama_decode_layers(
        layers=table.table.data_ptr(),
        num_layers=table.table.shape[0],
        hidden=d.hidden,
        num_heads=d.num_heads,
        num_kv_heads=d.num_kv_heads,
        head_dim=d.head_dim,
        intermediate=d.intermediate,
        rot_dim=d.rot_dim,
        eps=d.eps,
        scale=d.scale,
        sliding_window=d.sliding_window or 0,
        is_neox=d.is_neox,
        m=m,
        x=x.data_ptr(),
        residual=residual.data_ptr(),
        qkv=qkv,
        attn=attn,
        gate_up=gate_up,
        act=act,
        positions=positions.data_ptr(),
        slot_mapping=slots.data_ptr(),
        cos_sin_cache=cos_sin_cache.data_ptr(),
        max_position=cos_sin_cache.shape[0],
        block_tables=block_tables.data_ptr(),
        max_blocks_per_seq=block_tables.shape[1],
        block_table_stride=block_tables.stride(0),
        context_lens=context_lens.data_ptr(),
        num_blocks=num_blocks,
        block_size=block_size,
        cache_stride_block=table.cache_strides[0],
        cache_stride_token=table.cache_strides[1],
        cache_stride_head=table.cache_strides[2],
        dtype=native.NATIVE_DTYPES[table.dtype],
    )
    return x, residual
