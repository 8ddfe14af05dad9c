"""POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from swiftserve.router.router import Router
from swiftserve.server.errors import bad_request
from swiftserve.server.http import HTTPRequest, JSONResponse, Response
from swiftserve.server.params import request_session
from swiftserve.server.protocol import decode_request, text_or_token_inputs
from swiftserve.server.protocol_common import encode
from swiftserve.server.protocol_embeddings import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)

MAX_INPUTS = 2048


async def embeddings(request: HTTPRequest) -> Response:
    body = decode_request(request.body, EmbeddingRequest)
    request.label(body.model)
    router: Router = request.app.router
    inputs = text_or_token_inputs(body.input, "input", MAX_INPUTS)
    dim = router.embedding_handle(body.model).dim
    if body.dimensions is not None and body.dimensions != dim:
        raise bad_request(
            f"dimensions={body.dimensions} is not supported: `{body.model}` returns "
            f"{dim}-dimensional embeddings.",
            param="dimensions",
        )
    result = await router.embed(body.model, inputs, request_session(body, request.headers))
    vectors = np.asarray(result.embeddings, dtype=np.float32)
    if len(inputs) > 16:
        data = await asyncio.to_thread(_data, vectors, body.encoding_format)
    else:
        data = _data(vectors, body.encoding_format)
    usage = EmbeddingUsage(prompt_tokens=result.num_prompt_tokens, total_tokens=result.num_prompt_tokens)
    request.app.metrics.prompt_tokens.labels(body.model).inc(result.num_prompt_tokens)
    return JSONResponse(encode(EmbeddingResponse(data=data, model=body.model, usage=usage)))


def _data(vectors: np.ndarray, encoding_format: str) -> list[EmbeddingData]:
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        return [
            EmbeddingData(index=i, embedding=base64.b64encode(row.tobytes()).decode())
            for i, row in enumerate(little)
        ]
    return [EmbeddingData(index=i, embedding=row.tolist()) for i, row in enumerate(vectors)]
