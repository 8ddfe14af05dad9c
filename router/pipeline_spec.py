"""A pipeline as configured: a DAG of stages over served models, validated once, at load.

A stage has an `id`, a `kind`, the `model` it calls and the stages it waits for (`after`):
- chat: `messages` (role/content templates) -> one reply, or `fan_out` replies (a list);
- completion: a `prompt` template -> one completion, or `fan_out` of them;
- embed: an `input` template -> its vector;
- retrieve: an `input` template embedded by `model`, the `top_k` nearest passages of `corpus`
  (a JSONL file indexed once at load; pipeline_corpus.py) -> a list of texts.
A chat or completion stage may constrain its output (`structured_outputs`: a JSON schema, any JSON
object, a regex, a choice or a grammar); a JSON one hands the parsed value on, so later templates
read its fields (`{{ stages.route.topic }}`) and print it whole as JSON.
The stages are ordered so that each comes after every stage it names; the last one in that
order (exactly one stage that nothing waits for) gives the pipeline's answer. Everything here is
plain data on names: checked without models, tested with exact expectations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from swiftserve.structured_outputs import StructuredOutputs

StageKind = Literal["chat", "completion", "embed", "retrieve"]
STAGE_KINDS: tuple[str, ...] = ("chat", "completion", "embed", "retrieve")
GENERATING = ("chat", "completion")
MAX_FAN_OUT = 64


class PipelineError(ValueError):
    """A pipeline that cannot be served; the message names the pipeline (and the stage)."""

    def __init__(self, pipeline: str, problem: str, stage: str | None = None) -> None:
        where = f"pipelines[{pipeline}]" + (f".stages[{stage}]" if stage is not None else "")
        super().__init__(f"{where}: {problem}")
        self.pipeline, self.stage = pipeline, stage


@dataclass(frozen=True)
class Message:
    role: str
    content: str  # a Jinja2 template


@dataclass(frozen=True)
class StageSpec:
    """One stage; templates are Jinja2 over `input`, `stages` (earlier outputs) and `i` (fan-out)."""

    id: str
    kind: StageKind
    model: str
    after: tuple[str, ...] = ()
    messages: tuple[Message, ...] = ()  # chat
    prompt: str | None = None  # completion
    input: str = "{{ input }}"  # embed, retrieve
    fan_out: int = 1  # chat, completion: parallel calls, {{ i }} = 0..fan_out-1
    sampling: Mapping[str, Any] = field(default_factory=dict)  # max_tokens and SamplingParams' fields
    corpus: str | None = None  # retrieve: a JSONL file of {"text": ...} lines
    top_k: int = 3  # retrieve
    structured_outputs: StructuredOutputs | None = None  # chat, completion

    @property
    def parses_json(self) -> bool:
        """Its outputs are JSON values handed on parsed (a JSON schema or json_object)."""
        constraint = self.structured_outputs
        return constraint is not None and constraint.kind in ("json", "json_object")

    def templates(self) -> dict[str, str]:
        """Every template of this stage by where it sits (for checks and error messages)."""
        if self.kind == "chat":
            return {f"messages[{n}].content": m.content for n, m in enumerate(self.messages)}
        if self.kind == "completion":
            return {"prompt": self.prompt or ""}
        return {"input": self.input}


@dataclass(frozen=True)
class PipelineSpec:
    """name: how clients call it (as a model). stages: in an order where each stage comes after
    the ones it waits for. prewarm: load every model of the pipeline on arrival (coordinated
    pre-warming); False leaves each load to its stage, so the effect can be measured.
    priority: the request priority of its stages' calls when the request sets none (lower runs
    earlier, as a request's). max_queue: the most requests in flight; past it a request is
    refused at arrival (None: no bound)."""

    name: str
    stages: tuple[StageSpec, ...]
    prewarm: bool = True
    priority: int = 0
    max_queue: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise PipelineError(self.name, f"priority: an integer, got {self.priority!r}")
        if self.max_queue is not None and self.max_queue < 1:
            raise PipelineError(self.name, f"max_queue: at least 1 request in flight, got {self.max_queue}")
        object.__setattr__(self, "stages", ordered(self.name, self.stages))  # a derived order, once

    @property
    def final(self) -> StageSpec:
        return self.stages[-1]

    def models(self) -> tuple[str, ...]:
        """Every model the pipeline calls, in order of first need."""
        return tuple(dict.fromkeys(stage.model for stage in self.stages))

    def last_use(self) -> dict[str, str]:
        """Per model, the id of the last stage (in order) that calls it: its hold ends there."""
        return {stage.model: stage.id for stage in self.stages}

    def depth(self) -> dict[str, int]:
        """Per stage, the number of stages on the longest chain up to and including it."""
        depth: dict[str, int] = {}
        for stage in self.stages:
            depth[stage.id] = 1 + max((depth[a] for a in stage.after), default=0)
        return depth


def ordered(pipeline: str, stages: Sequence[StageSpec]) -> tuple[StageSpec, ...]:
    """The stages with every one after those it waits for (config order among equals);
    PipelineError for duplicates, unknown `after` names, cycles, or not exactly one final stage."""
    if not stages:
        raise PipelineError(pipeline, "a pipeline needs at least one stage")
    by_id: dict[str, StageSpec] = {}
    for stage in stages:
        _check_stage(pipeline, stage)
        if stage.id in by_id:
            raise PipelineError(pipeline, "two stages share this id", stage.id)
        by_id[stage.id] = stage
    for stage in stages:
        for name in stage.after:
            if name not in by_id:
                raise PipelineError(pipeline, f"after: no stage {name!r} in this pipeline", stage.id)
    order = _topological(pipeline, stages, by_id)
    waited_for = {name for stage in stages for name in stage.after}
    finals = [s.id for s in order if s.id not in waited_for]
    if len(finals) != 1:
        raise PipelineError(
            pipeline, f"exactly one stage must end the pipeline (nothing waits for it), got {finals}"
        )
    if order[-1].id != finals[0]:
        order = [s for s in order if s.id != finals[0]] + [by_id[finals[0]]]
    return tuple(order)


def _topological(pipeline: str, stages: Sequence[StageSpec], by_id: dict[str, StageSpec]) -> list[StageSpec]:
    placed: list[StageSpec] = []
    done: set[str] = set()
    pending = list(stages)
    while pending:
        ready = [s for s in pending if set(s.after) <= done]
        if not ready:
            cycle = sorted(s.id for s in pending)
            raise PipelineError(pipeline, f"the stages {cycle} wait for each other (a cycle)")
        placed.extend(ready)
        done.update(s.id for s in ready)
        pending = [s for s in pending if s.id not in done]
    return placed


def _check_stage(pipeline: str, stage: StageSpec) -> None:
    def fail(problem: str) -> None:
        raise PipelineError(pipeline, problem, stage.id)

    if not stage.id or not stage.id.isidentifier():
        fail("id: a stage id must be a name usable in templates (letters, digits, _)")
    if stage.kind not in STAGE_KINDS:
        fail(f"kind: one of {STAGE_KINDS}, got {stage.kind!r}")
    if not 1 <= stage.fan_out <= MAX_FAN_OUT:
        fail(f"fan_out: between 1 and {MAX_FAN_OUT}, got {stage.fan_out}")
    if stage.fan_out > 1 and stage.kind not in GENERATING:
        fail("fan_out: only chat and completion stages fan out")
    if stage.kind == "chat" and not stage.messages:
        fail("messages: a chat stage needs at least one message")
    if stage.kind == "completion" and not stage.prompt:
        fail("prompt: a completion stage needs a prompt")
    if stage.kind == "retrieve" and not stage.corpus:
        fail("corpus: a retrieve stage needs a corpus file (JSONL)")
    if stage.kind == "retrieve" and stage.top_k < 1:
        fail(f"top_k: must be >= 1, got {stage.top_k}")
    if stage.sampling and stage.kind not in GENERATING:
        fail("sampling parameters are for chat and completion stages")
    if "structured_outputs" in stage.sampling:
        fail("sampling: set the stage's structured_outputs, not a sampling field")
    if stage.structured_outputs is not None and stage.kind not in GENERATING:
        fail("structured_outputs: only chat and completion stages generate")
    if stage.structured_outputs is not None and not isinstance(stage.structured_outputs, StructuredOutputs):
        fail(f"structured_outputs: a StructuredOutputs, got {type(stage.structured_outputs).__name__}")
    if stage.id in stage.after:
        fail("after: a stage cannot wait for itself")
