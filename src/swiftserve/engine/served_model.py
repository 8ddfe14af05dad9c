"""What the router needs of every served model, chat and embedding alike.

Building a served model loads nothing heavy: it knows its name, kind, tokenizer and footprint
(weights plus a KV floor, computed from its config and files), and stays cold. `load()` builds the
weights and the KV cache and starts serving; `unload()` stops serving and returns all of that
memory. Both are idempotent; the router calls them (never two at once for one model) and keeps the
residency ledger (scheduler/residency.py) in step.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from swiftserve.config import ModelKind
from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams
from swiftserve.scheduler.kv_demand import KvUsage

# An embed call's inputs: texts, or token-id lists (the engine checks them).
EmbedInputs = list[str] | list[list[int]]


@dataclass(frozen=True)
class Footprint:
    """The bytes a model needs while resident, known before it loads."""

    weight_bytes: int
    kv_block_bytes: int  # one KV block over all layers, K and V (0 for an encoder)
    kv_floor_blocks: int  # enough blocks for one sequence of max_model_len


class TextTokenizer(Protocol):
    """What the request path does with a model's tokenizer (loader/tokenizer.TokenizerInfo)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@runtime_checkable
class ServedModel(Protocol):
    # Read-only: a plain attribute implements each of them.
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> ModelKind: ...

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


@runtime_checkable
class ResizableKV(Protocol):
    """A served model whose KV cache can be resized (engine/chat_model.LocalChatModel), by the
    router's keeper of the memory budget (router/kv_controller.py)."""

    @property
    def name(self) -> str: ...

    async def kv_usage(self) -> KvUsage: ...

    async def resize_kv(self, num_blocks: int) -> KvUsage: ...


@runtime_checkable
class ChatModel(ServedModel, Protocol):
    """A chat model: what the router validates a request with while the model is cold
    (tokenizer, chat template, context length), and generate() once it is resident."""

    @property
    def max_model_len(self) -> int: ...

    @property
    def tokenizer(self) -> TextTokenizer: ...

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str: ...

    def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Cumulative outputs of one request; closing the iterator early aborts it. Engine errors
        (engine/errors.py) come out of it, before the first output or later. priority: lower runs
        earlier in the model's queue (vLLM's sense)."""
        ...


@runtime_checkable
class EmbeddingModel(ServedModel, Protocol):
    """An embedding model: its dimension while cold, embed() once resident."""

    @property
    def dim(self) -> int: ...

    async def embed(self, inputs: EmbedInputs) -> EmbeddingResult: ...
