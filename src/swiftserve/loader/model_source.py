"""A model spec resolved once into what every later step needs: the path, the kind, the model's
config and, for a snapshot, its summary (stored dtype included).

`resolve_source` fetches and converts what it must (resolve.py), reads config.json or the
snapshot's index once, and returns a frozen ModelSource that the engines, the model loader and
the footprint take instead of deciding "folder or snapshot?" and reading the files again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftserve.config import ModelKind
from swiftserve.loader.aliases import known_aliases
from swiftserve.loader.dtypes import serving_dtype
from swiftserve.loader.model_kind import kind_model, kind_of_folder
from swiftserve.loader.resolve import resolve_model
from swiftserve.loader.snapshot_format import ModelSummary
from swiftserve.loader.snapshot_reader import is_snapshot, read_index
from swiftserve.loader.weights import load_config


class WrongModelKindError(ValueError):
    """A model of one kind used where the other is needed (an encoder asked to chat)."""

    def __init__(self, spec: str, kind: str, wanted: str) -> None:
        super().__init__(
            f"{spec!r} is {kind_model(kind)}, not {kind_model(wanted)}"
            + (": serve it on /v1/embeddings (EmbeddingEngine)" if kind == "embedding" else "")
        )
        self.spec, self.kind, self.wanted = spec, kind, wanted


@dataclass(frozen=True)
class ModelSource:
    """spec: as given (alias, folder, .gguf, .swsnap). path: the Hugging Face folder or the
    snapshot file. hf_config: config.json's, or the snapshot's copy. snapshot: the snapshot's
    summary (kind, dtype, pooling, ...), None for a folder."""

    spec: str
    path: Path
    kind: ModelKind
    hf_config: dict[str, Any] = field(repr=False)
    snapshot: ModelSummary | None = field(default=None, repr=False)

    @property
    def is_snapshot(self) -> bool:
        return self.snapshot is not None

    @property
    def stored_dtype(self) -> str | None:
        """A snapshot's dtype (its tensors are stored in it); None for a folder."""
        return self.snapshot.dtype if self.snapshot is not None else None

    def serving_dtype(self, requested: str) -> str:
        """The dtype this model is served in when `requested` is asked for ("auto" included)."""
        return serving_dtype(self.kind, requested, self.stored_dtype)

    def expect(self, kind: str) -> ModelSource:
        """Itself, or WrongModelKindError when it is a model of the other kind."""
        if self.kind != kind:
            raise WrongModelKindError(self.spec, self.kind, kind)
        return self


def resolve_source(
    spec: str | Path | ModelSource, cache_dir: str | Path | None = None, progress: bool = True
) -> ModelSource:
    """The ModelSource of an alias, folder, .gguf or .swsnap (a ModelSource is returned as is)."""
    if isinstance(spec, ModelSource):
        return spec
    path = resolve_model(str(spec), cache_dir, progress)
    if is_snapshot(path):
        summary = read_index(path).meta
        return ModelSource(str(spec), path, summary.kind, summary.hf_config, summary)
    config = load_config(path)
    alias = known_aliases().get(str(spec))
    kind = alias.kind if alias is not None else kind_of_folder(path, config)
    return ModelSource(str(spec), path, kind, config)
