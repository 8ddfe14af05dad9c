"""Which converter a GGUF file needs: Gemma 3 has its own (gguf_gemma3.py), the llama family
shares gguf_convert.py. Kept apart so neither converter imports the other's caller."""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader

from swiftserve.loader.gguf_convert import convert_gguf
from swiftserve.loader.gguf_gemma3 import convert_gemma3_gguf
from swiftserve.loader.gguf_metadata import field_value


def convert_any_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> None:
    reader = GGUFReader(gguf_path)
    if field_value(reader, "general.architecture") == "gemma3":
        convert_gemma3_gguf(reader, gguf_path, out_dir, progress)
    else:
        convert_gguf(gguf_path, out_dir, progress)
