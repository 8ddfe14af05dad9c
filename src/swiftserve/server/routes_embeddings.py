"""POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from swiftserve.server import protocol as p
from swiftserve.server.errors import bad_request, from_exception
from swiftserve.server.http import JSONResponse, Request, Response

_ENDPOINT = "embeddings"
MAX_INPUTS = 2048


async def embeddings(request: Request) -> Response:
    body = p.decode_request(request.body, p.EmbeddingRequest)
    served = request.app.model(body.model, "embedding", _ENDPOINT)
    request.model = served.name
    engine = served.engine
    inputs = p.text_or_token_inputs(body.input, "input", MAX_INPUTS)
    if body.dimensions is not None and body.dimensions != engine.dim:
        raise bad_request(
            f"dimensions={body.dimensions} is not supported: `{served.name}` returns "
            f"{engine.dim}-dimensional embeddings.",
            param="dimensions",
        )
    try:
        result = await engine.embed(inputs)
    except Exception as exc:  # noqa: BLE001 - mapped to an HTTP error when it is the request's fault
        error = from_exception(exc, served.name)
        if error is None:
            raise
        raise error from None
    vectors = np.asarray(result.embeddings, dtype=np.float32)
    if len(inputs) > 16:
        data = await asyncio.to_thread(_data, vectors, body.encoding_format)
    else:
        data = _data(vectors, body.encoding_format)
    usage = p.EmbeddingUsage(prompt_tokens=result.num_prompt_tokens, total_tokens=result.num_prompt_tokens)
    request.app.metrics.prompt_tokens.labels(served.name).inc(result.num_prompt_tokens)
    return JSONResponse(p.encode(p.EmbeddingResponse(data=data, model=served.name, usage=usage)))


def _data(vectors: np.ndarray, encoding_format: str) -> list[p.EmbeddingData]:
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        return [
            p.EmbeddingData(index=i, embedding=base64.b64encode(row.tobytes()).decode())
            for i, row in enumerate(little)
        ]
    return [p.EmbeddingData(index=i, embedding=row.tolist()) for i, row in enumerate(vectors)]
