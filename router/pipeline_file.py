"""The `pipelines:` section of a config file: decoded by msgspec (types, unknown keys), then
turned into PipelineSpecs whose errors name the pipeline and the stage.

    pipelines:
      - name: rag
        prewarm: true            # default; false leaves each load to its stage
        priority: 0              # its stages' request priority when a request sets none
        max_queue: 8             # requests in flight; past it 429 at arrival (default: no bound)
        stages:
          - {id: context, kind: retrieve, model: embed, corpus: docs.jsonl, top_k: 2}
          - id: drafts
            kind: chat
            model: small
            after: [context]
            fan_out: 3
            max_tokens: 64
            sampling: {temperature: 0.7}
            structured_outputs: {json: {type: object, properties: {answer: {type: string}}}}
            messages:
              - {role: user, content: "Facts: {{ stages.context }}\\nQuestion: {{ input }}"}
          - {id: final, kind: chat, model: merge, after: [drafts],
             messages: [{role: user, content: "Merge: {{ stages.drafts }}"}]}

A corpus path is relative to the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from swiftserve.router.pipeline_spec import Message, PipelineError, PipelineSpec, StageKind, StageSpec

from swiftserve.structured_outputs import StructuredOutputs, StructuredOutputsError


class MessageEntry(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str


class StageEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    kind: StageKind
    model: str
    after: list[str] = []
    messages: list[MessageEntry] = []
    prompt: str | None = None
    input: str = "{{ input }}"
    fan_out: int = 1
    max_tokens: int | None = None
    sampling: dict[str, Any] = {}
    corpus: str | None = None
    top_k: int = 3
    structured_outputs: dict[str, Any] | None = None


class PipelineEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    stages: list[StageEntry]
    prewarm: bool = True
    priority: int = 0
    max_queue: int | None = None


def pipeline_specs(
    entries: list[PipelineEntry], models: set[str], base_dir: Path
) -> tuple[PipelineSpec, ...]:
    """The file's pipelines, checked against its models (`models`: served names)."""
    specs = []
    for entry in entries:
        if entry.name in models:
            raise PipelineError(entry.name, "a pipeline cannot have the name of a model")
        stages = tuple(_stage(entry.name, stage, models, base_dir) for stage in entry.stages)
        specs.append(PipelineSpec(entry.name, stages, entry.prewarm, entry.priority, entry.max_queue))
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise PipelineError(name, "two pipelines share this name")
    return tuple(specs)


def _stage(pipeline: str, entry: StageEntry, models: set[str], base_dir: Path) -> StageSpec:
    if entry.model not in models:
        raise PipelineError(pipeline, f"model: no model {entry.model!r} is served", entry.id)
    sampling = dict(entry.sampling)
    if entry.max_tokens is not None:
        sampling["max_tokens"] = entry.max_tokens
    corpus = str(base_dir / entry.corpus) if entry.corpus is not None else None
    return StageSpec(
        id=entry.id,
        kind=entry.kind,
        model=entry.model,
        after=tuple(entry.after),
        messages=tuple(Message(m.role, m.content) for m in entry.messages),
        prompt=entry.prompt,
        input=entry.input,
        fan_out=entry.fan_out,
        sampling=sampling,
        corpus=corpus,
        top_k=entry.top_k,
        structured_outputs=_constraint(pipeline, entry),
    )


def _constraint(pipeline: str, entry: StageEntry) -> StructuredOutputs | None:
    """The stage's structured_outputs mapping as StructuredOutputs (vLLM's `structured_outputs`
    fields: json, json_object, regex, choice, grammar, whitespace_flexible)."""
    if entry.structured_outputs is None:
        return None
    fields = dict(entry.structured_outputs)
    if "param" in fields:
        raise PipelineError(pipeline, "structured_outputs: unknown field 'param'", entry.id)
    try:
        return StructuredOutputs(**fields, param="structured_outputs")
    except StructuredOutputsError as exc:
        raise PipelineError(pipeline, str(exc), entry.id) from None
    except TypeError as exc:  # an unknown field
        raise PipelineError(pipeline, f"structured_outputs: {exc}", entry.id) from None
