"""The wire's embeddings: the request and the answer."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

from swiftserve.server.protocol_common import PositiveInt, RequestStruct


class EmbeddingRequest(RequestStruct, kw_only=True):
    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None


class EmbeddingData(Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Struct):
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: str = "list"
