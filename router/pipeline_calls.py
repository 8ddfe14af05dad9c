"""A pipeline stage's call as plain values (stage_caller.StageCall): its templates rendered for one
request, its sampling settled (the stage's own; for the final stage, the caller's on top)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swiftserve.router.errors import InvalidParameterError
from swiftserve.router.pipeline_spec import GENERATING, StageSpec
from swiftserve.router.pipeline_templates import PipelineInputError, StageTemplates
from swiftserve.router.pipeline_types import PipelineInput
from swiftserve.router.stage_caller import StageCall


def stage_call(
    stage: StageSpec,
    templates: StageTemplates,
    request: PipelineInput,
    outputs: Mapping[str, Any],
    is_final: bool,
    priority: int | None,
) -> StageCall:
    """The call of `stage` once the stages it waits for have their `outputs`."""
    context = {"input": request.input, "messages": request.messages, "stages": outputs}
    if stage.kind not in GENERATING:
        return StageCall(
            stage.model, stage.kind, (render(templates, "input", context, 0),), priority=priority
        )
    max_tokens, sampling = _sampling(stage, request if is_final else None)
    if stage.kind == "chat":
        inputs: tuple[Any, ...] = tuple(_messages(stage, templates, context, i) for i in range(stage.fan_out))
    else:
        inputs = tuple(render(templates, "prompt", context, i) for i in range(stage.fan_out))
    return StageCall(stage.model, stage.kind, inputs, max_tokens, sampling, priority)


def _sampling(stage: StageSpec, request: PipelineInput | None) -> tuple[int | None, dict[str, Any]]:
    """(max_tokens, SamplingParams fields): the stage's, then the request's for the final stage."""
    sampling = dict(stage.sampling)
    max_tokens = sampling.pop("max_tokens", None)
    if stage.structured_outputs is not None:
        sampling["structured_outputs"] = stage.structured_outputs
    if request is not None:
        sampling.update(request.sampling or {})
        max_tokens = request.max_tokens if request.max_tokens is not None else max_tokens
    return max_tokens, sampling


def _messages(stage: StageSpec, templates: StageTemplates, context: dict, i: int) -> list[dict]:
    return [
        {"role": m.role, "content": render(templates, f"messages[{n}].content", context, i)}
        for n, m in enumerate(stage.messages)
    ]


def render(templates: StageTemplates, where: str, context: dict, i: int) -> str:
    """One template of the stage; a request whose values break it: InvalidParameterError."""
    try:
        return templates.render(where, {**context, "i": i})
    except PipelineInputError as exc:
        raise InvalidParameterError("messages", str(exc)) from None
