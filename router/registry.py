"""Model specs and their kinds: what `--models` / `--on-demand` entries mean. (The table of
served models is the Router's, model_router.py.)

A model spec on the command line is an alias, a folder, a .gguf file or a .swsnap snapshot,
optionally prefixed with the name to serve it under (`served_name=spec`). Its kind decides which
endpoints accept it: "chat" models answer /v1/chat/completions and /v1/completions, "embedding"
models /v1/embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swiftserve.config import ModelKind

SNAPSHOT_SUFFIX = ".swsnap"  # loader/snapshot_format.py's; spelled here to keep the loader unimported


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
    """chat or embedding, before anything is fetched: the loader's alias table first, a .gguf is
    a chat model, a snapshot's header, then the folder (loader/model_kind.py's rule)."""
    alias = _known_aliases().get(source)
    if alias is not None:
        return alias.kind
    if source.endswith(".gguf"):
        return "chat"
    kind = _snapshot_kind(source)
    if kind is not None:
        return kind
    folder = Path(source)
    if (folder / "config.json").is_file():
        from swiftserve.loader.model_kind import kind_of_folder

        return kind_of_folder(folder)
    if folder.exists():
        raise ValueError(f"{source}: a model folder needs a config.json")
    aliases = ", ".join(sorted(_known_aliases()))
    raise ValueError(f"unknown model {source!r}: not an alias ({aliases}), folder, .gguf or .swsnap file")


def _snapshot_kind(source: str) -> ModelKind | None:
    """The kind a snapshot file's header records; None when source is not a snapshot."""
    from swiftserve.loader.snapshot_reader import is_snapshot, read_index

    return read_index(source).meta.kind if is_snapshot(source) else None


def _known_aliases() -> dict:
    from swiftserve.loader import known_aliases

    return known_aliases()
