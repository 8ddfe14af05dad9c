"""POST /v1/pipelines/{name}: run a pipeline and answer every stage's output and timings (for
debugging; clients call a pipeline as a model on /v1/chat/completions). Also the pipelines'
cards in /v1/models (kind "pipeline")."""

from __future__ import annotations

import msgspec

from swiftserve.router.router import Router
from swiftserve.server.errors import bad_request
from swiftserve.server.http import Handler, HTTPRequest, JSONResponse, Response
from swiftserve.server.params import request_limits
from swiftserve.server.pipeline_report import pipeline_run
from swiftserve.server.protocol import decode_request
from swiftserve.server.protocol_common import encode
from swiftserve.server.protocol_models import ModelCard
from swiftserve.server.protocol_pipelines import PipelineRunRequest

PIPELINE_PREFIX = "/v1/pipelines/"


def pipeline_route(path: str) -> tuple[str, dict[str, Handler]] | None:
    if path.startswith(PIPELINE_PREFIX) and len(path) > len(PIPELINE_PREFIX):
        return f"{PIPELINE_PREFIX}{{name}}", {"POST": run_pipeline}
    return None


async def run_pipeline(request: HTTPRequest) -> Response:
    name = request.path[len(PIPELINE_PREFIX) :]
    request.label(name)
    body = decode_request(request.body or b"{}", PipelineRunRequest)
    messages = _messages(body)
    sampling = {k: getattr(body, k) for k in ("temperature", "top_p", "seed") if getattr(body, k) is not None}
    sampling.update(request_limits(body, request.headers))
    router: Router = request.app.router
    result = await router.run_pipeline(name, messages, body.max_tokens, **sampling)
    return JSONResponse(encode(pipeline_run(result)))


def _messages(body: PipelineRunRequest) -> list[dict]:
    if (body.input is msgspec.UNSET) == (body.messages is msgspec.UNSET):
        raise bad_request("Give the pipeline's input as either `input` (text) or `messages`.", param="input")
    if isinstance(body.input, str):
        return [{"role": "user", "content": body.input}]
    assert isinstance(body.messages, list)  # exactly one of the two is set, checked above
    return body.messages


def pipeline_cards(router: Router, created: int) -> list[ModelCard]:
    """The pipelines as /v1/models lists them: kind "pipeline", policy "prewarm" or "no-prewarm"."""
    cards = []
    for name in router.pipelines.names():
        spec = router.pipelines.get(name).spec
        policy = "prewarm" if spec.prewarm else "no-prewarm"
        cards.append(ModelCard(id=name, created=created, kind="pipeline", policy=policy, state="ready"))
    return cards
