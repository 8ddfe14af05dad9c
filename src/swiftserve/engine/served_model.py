"""What the router needs of every served model, chat and embedding alike.

Building a served model loads nothing heavy: it knows its name, kind, tokenizer and footprint
(weights plus a KV floor, computed from its config and files), and stays cold. `load()` builds the
weights and the KV cache and starts serving; `unload()` stops serving and returns all of that
memory. Both are idempotent; the router calls them (never two at once for one model) and keeps the
residency ledger (scheduler/residency.py) in step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

ModelKind = Literal["chat", "embedding"]


@dataclass(frozen=True)
class Footprint:
    """The bytes a model needs while resident, known before it loads."""

    weight_bytes: int
    kv_block_bytes: int  # one KV block over all layers, K and V (0 for an encoder)
    kv_floor_blocks: int  # enough blocks for one sequence of max_model_len


@runtime_checkable
class ServedModel(Protocol):
    name: str
    kind: ModelKind

    @property
    def is_resident(self) -> bool: ...

    def footprint(self) -> Footprint: ...

    async def load(self) -> None:
        """Builds weights and KV cache and starts serving; raises if the model cannot load."""
        ...

    async def unload(self, *, force: bool = False) -> None:
        """Stops serving and frees the weights and the KV cache. Refuses (ModelInUseError) while
        requests are in flight, unless force: then they are aborted (a shutdown)."""
        ...


@runtime_checkable
class ParkableModel(ServedModel, Protocol):
    """A served model that can be unloaded to host memory (engine/host_park.py): `park()` stops
    serving and frees everything but the weights; the next `load()` reloads from them;
    `drop_parked()` frees them. `can_park` says whether this model really can."""

    @property
    def can_park(self) -> bool: ...

    @property
    def is_parked(self) -> bool: ...

    async def park(self) -> None: ...

    def drop_parked(self) -> None: ...


class ChatModel(ServedModel, Protocol):
    max_model_len: int

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str: ...

    def generate(self, prompt, params, request_id: str | None = None) -> AsyncIterator: ...


class EmbeddingModel(ServedModel, Protocol):
    async def embed(self, inputs: list[str] | list[list[int]]): ...
