"""Typed access to a GGUF file's key/value metadata (llama.cpp's key names)."""

from __future__ import annotations

from typing import Any

from gguf import GGUFReader, GGUFValueType


def field_value(reader: GGUFReader, key: str, default: Any = None) -> Any:
    """The value stored under `key` as a plain Python object (str, int, float, bool or list)."""
    field = reader.fields.get(key)
    if field is None or not field.types:
        return default
    main_type = field.types[0]
    if main_type == GGUFValueType.ARRAY:
        if field.types[-1] == GGUFValueType.STRING:
            return [_to_str(field.parts[i]) for i in field.data]
        return [value for i in field.data for value in field.parts[i].tolist()]
    if main_type == GGUFValueType.STRING:
        return _to_str(field.parts[-1])
    return field.parts[-1].tolist()[0]


def arch_value(reader: GGUFReader, arch: str, key: str, default: Any = None) -> Any:
    """A per-architecture key such as `llama.block_count`."""
    return field_value(reader, f"{arch}.{key}", default)


def _to_str(part) -> str:
    return part.tobytes().decode("utf-8", errors="replace")
