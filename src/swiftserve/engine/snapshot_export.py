"""Making a snapshot of a model source: load it the usual way, then write what the runtime holds.

The tensors are the loaded model's own (fused, un-permuted, cast, Gemma's norms already +1), so
a load from the snapshot does no work on them. The tokenizer files, chat template, config and
(for encoders) pooling travel in the header: the snapshot alone is enough to serve the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from swiftserve.loader import iter_weights
from swiftserve.loader.dtypes import torch_dtype
from swiftserve.loader.model_source import ModelSource, resolve_source
from swiftserve.loader.snapshot_cache import folder_meta
from swiftserve.loader.snapshot_format import PoolingSpec, SourceKey
from swiftserve.loader.snapshot_modules import snapshot_tensors
from swiftserve.loader.snapshot_writer import write_snapshot
from swiftserve.model_runner.model_loader import load_model
from swiftserve.models.bert import load_bert_encoder, pooling_spec

CPU = torch.device("cpu")


def export_snapshot(
    source: str | ModelSource, out: str | Path, *, dtype: str = "auto", cache_dir: str | None = None
) -> Path:
    """Loads source (alias, folder, .gguf) on the CPU in dtype ("auto": as `swiftserve launch`
    serves it) and writes its snapshot to out."""
    model_source = resolve_source(source, cache_dir, progress=False)
    if model_source.is_snapshot:
        raise ValueError(f"{model_source.spec} is a snapshot already")
    dtype_name = model_source.serving_dtype(dtype)
    model, pooling = _load(model_source, torch_dtype(dtype_name, CPU))
    tensors, buffer_names = snapshot_tensors(model)
    key = SourceKey(spec=_source_spec(model_source.spec), dtype=dtype_name)
    meta = folder_meta(model_source.path, model_source.kind, key, pooling)
    write_snapshot(out, tensors, meta, buffer_names)
    return Path(out)


def _load(source: ModelSource, dtype: torch.dtype) -> tuple[torch.nn.Module, PoolingSpec | None]:
    """The model as serving it would load it (on the CPU: the tensors are written from there)."""
    if source.kind == "chat":
        return load_model(source, dtype, CPU), None
    folder = source.path
    model = load_bert_encoder(folder, source.hf_config, iter_weights(folder), dtype=dtype, device=CPU)
    return model, pooling_spec(model)


def _source_spec(source: str) -> str:
    """An alias as is; a path made absolute, so the key names one source wherever it is read."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source
