"""Model specs and their kinds: what `--models` / `--on-demand` entries mean. (The table of
served models is the Router's, router.py.)

A model spec on the command line is an alias, a folder, a .gguf file or a .swsnap snapshot,
optionally prefixed with the name to serve it under (`served_name=spec`). Its kind decides which
endpoints accept it: "chat" models answer /v1/chat/completions and /v1/completions, "embedding"
models /v1/embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelKind = Literal["chat", "embedding"]
SNAPSHOT_SUFFIX = ".swsnap"  # loader/snapshot_format.py's; spelled here to keep the loader unimported
KINDS: tuple[str, ...] = ("chat", "embedding")

# config.json architectures that are encoders: served as embedding models.
_EMBEDDING_ARCHITECTURES = (
    "Bert",
    "Roberta",
    "XLMRoberta",
    "DistilBert",
    "MPNet",
    "Electra",
    "NomicBert",
    "ModernBert",
    "DebertaV2",
)


@dataclass(frozen=True)
class ModelSpec:
    """One `--models` entry: what to load (`source`) and under which name to serve it."""

    served_name: str
    source: str
    kind: ModelKind

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """`name=spec` or `spec`; the kind comes from the alias table or the model's config."""
        text = text.strip()
        if not text:
            raise ValueError("empty model spec")
        name, sep, source = text.partition("=")
        if not sep or "/" in name or not name:
            name, source = default_served_name(text), text
        if not source:
            raise ValueError(f"model spec {text!r} names no model after '='")
        return cls(served_name=name, source=source, kind=detect_kind(source))


def default_served_name(source: str) -> str:
    """The alias itself, a folder's name, or a .gguf or .swsnap file's stem."""
    path = Path(source)
    if source.endswith((".gguf", SNAPSHOT_SUFFIX)):
        return path.stem
    if path.exists():
        return path.resolve().name
    return source


def detect_kind(source: str) -> ModelKind:
    """chat or embedding: the loader's alias table first, a snapshot's header, then the folder's
    config.json."""
    alias = _known_aliases().get(source)
    if alias is not None:
        return alias.kind
    if source.endswith(".gguf"):
        return "chat"
    kind = _snapshot_kind(source)
    if kind is not None:
        return kind
    folder = Path(source)
    if (folder / "modules.json").is_file() and not (folder / "generation_config.json").is_file():
        return "embedding"  # a sentence-transformers folder
    config_path = folder / "config.json"
    if config_path.is_file():
        return kind_from_config(json.loads(config_path.read_text()))
    if folder.exists():
        raise ValueError(f"{source}: a model folder needs a config.json")
    aliases = ", ".join(sorted(_known_aliases()))
    raise ValueError(f"unknown model {source!r}: not an alias ({aliases}), folder, .gguf or .swsnap file")


def kind_from_config(config: dict) -> ModelKind:
    architectures = config.get("architectures") or []
    model_type = str(config.get("model_type", ""))
    if any(a.startswith(_EMBEDDING_ARCHITECTURES) for a in architectures):
        return "embedding"
    if not architectures and model_type in (
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "mpnet",
        "nomic_bert",
    ):
        return "embedding"
    return "chat"


def _snapshot_kind(source: str) -> ModelKind | None:
    """The kind a snapshot file's header records; None when source is not a snapshot."""
    from swiftserve.loader.snapshot_reader import is_snapshot, read_index

    return read_index(source).meta.kind if is_snapshot(source) else None


def _known_aliases() -> dict:
    from swiftserve.loader import known_aliases

    return known_aliases()
