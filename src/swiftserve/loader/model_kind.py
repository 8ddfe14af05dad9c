"""Which endpoints a model answers: "chat" (generation) or "embedding" (a sentence encoder), read
from a prepared folder. One rule, used by the model source (model_source.py) and by the router's
check of a spec before anything is fetched (router/registry.py)."""

from __future__ import annotations

import json
from pathlib import Path

from swiftserve.config import ModelKind

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
_EMBEDDING_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "nomic_bert")


def kind_from_config(config: dict) -> ModelKind:
    """An encoder architecture (or, with none named, an encoder model_type) is an embedding model."""
    architectures = config.get("architectures") or []
    if any(a.startswith(_EMBEDDING_ARCHITECTURES) for a in architectures):
        return "embedding"
    if not architectures and str(config.get("model_type", "")) in _EMBEDDING_MODEL_TYPES:
        return "embedding"
    return "chat"


def kind_of_folder(folder: Path, config: dict | None = None) -> ModelKind:
    """A sentence-transformers folder (modules.json, no generation_config.json) is an embedding
    model; otherwise config.json decides (read here unless given)."""
    if (folder / "modules.json").is_file() and not (folder / "generation_config.json").is_file():
        return "embedding"
    if config is None:
        config = json.loads((folder / "config.json").read_text())
    return kind_from_config(config)


def kind_model(kind: str) -> str:
    """'a chat model', 'an embedding model': a model kind in a sentence, with its article."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} model"
