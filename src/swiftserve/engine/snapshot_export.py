"""Making a snapshot of a model source: load it the usual way, then write what the runtime holds.

The tensors are the loaded model's own (fused, un-permuted, cast, Gemma's norms already +1), so
a load from the snapshot does no work on them. The tokenizer files, chat template, config and
(for encoders) pooling travel in the header: the snapshot alone is enough to serve the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from swiftserve.loader import load_config, resolve_model
from swiftserve.loader.snapshot_cache import folder_meta
from swiftserve.loader.snapshot_format import PoolingSpec, SourceKey
from swiftserve.loader.snapshot_modules import snapshot_tensors
from swiftserve.loader.snapshot_reader import is_snapshot
from swiftserve.loader.snapshot_writer import write_snapshot
from swiftserve.model_runner.model_loader import load_model
from swiftserve.models.bert import load_bert_encoder, pooling_spec

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# "auto" as `swiftserve launch` serves each kind.
_AUTO_DTYPE = {"chat": "bfloat16", "embedding": "float32"}


def export_snapshot(
    source: str, kind: str, out: str | Path, *, dtype: str = "auto", cache_dir: str | None = None
) -> Path:
    """Loads source (alias, folder, .gguf) on the CPU in dtype and writes its snapshot to out."""
    folder = resolve_model(source, cache_dir, progress=False)
    if is_snapshot(folder):
        raise ValueError(f"{source} is a snapshot already")
    dtype_name = _AUTO_DTYPE[kind] if dtype == "auto" else dtype
    if dtype_name not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    model, pooling = _load(folder, kind, _DTYPES[dtype_name])
    tensors, buffer_names = snapshot_tensors(model)
    meta = folder_meta(folder, kind, SourceKey(spec=_source_spec(source), dtype=dtype_name), pooling)
    write_snapshot(out, tensors, meta, buffer_names)
    return Path(out)


def _load(folder: Path, kind: str, dtype: torch.dtype) -> tuple[torch.nn.Module, PoolingSpec | None]:
    """The model as serving it would load it (on the CPU: the tensors are written from there)."""
    cpu = torch.device("cpu")
    if kind == "chat":
        return load_model(folder, load_config(folder), dtype, cpu), None
    from swiftserve.loader import iter_weights

    model = load_bert_encoder(folder, load_config(folder), iter_weights(folder), dtype=dtype, device=cpu)
    return model, pooling_spec(model)


def _source_spec(source: str) -> str:
    """An alias as is; a path made absolute, so the key names one source wherever it is read."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source
