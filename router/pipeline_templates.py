"""The Jinja2 templates of a pipeline's stages: compiled and checked once at load, rendered per
request in a sandbox.

Names a template may use: `input` (the last user message), `messages` (the whole conversation),
`i` (the call's index in a fan-out, else 0) and `stages.<id>`, the output of a stage this one
waits for (directly or through others). A list output (a fan-out's replies, retrieved passages)
prints as its items separated by blank lines, and can be indexed or looped over. Anything else is
an error at load naming the pipeline and the stage; a value that breaks a template at run time
(StrictUndefined, the sandbox) is the request's fault: PipelineInputError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from swiftserve.router.pipeline_spec import PipelineError, PipelineSpec, StageSpec

NAMES = frozenset({"input", "messages", "i", "stages"})
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class PipelineInputError(ValueError):
    """A request's values do not render a stage's template (the stage is named)."""

    def __init__(self, stage: str, problem: str) -> None:
        super().__init__(f"stage {stage!r}: {problem}")
        self.stage = stage


class Texts(list):
    """A list of texts that prints as its items separated by blank lines."""

    def __str__(self) -> str:
        return "\n\n".join(str(item) for item in self)


@dataclass(frozen=True)
class StageTemplates:
    """A stage's compiled templates by where they sit (`prompt`, `messages[0].content`, `input`)."""

    stage: str
    compiled: Mapping[str, Template]

    def render(self, where: str, context: Mapping[str, Any]) -> str:
        try:
            return self.compiled[where].render(context)
        except TemplateError as exc:
            raise PipelineInputError(self.stage, f"{where}: {exc}") from None
        except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise PipelineInputError(self.stage, f"{where}: {type(exc).__name__}: {exc}") from None


def compile_pipeline(spec: PipelineSpec) -> dict[str, StageTemplates]:
    """Every stage's templates, checked: syntax, names, and stages.<id> only of upstream stages."""
    upstream = _upstream(spec)
    return {stage.id: _compile_stage(spec.name, stage, upstream[stage.id]) for stage in spec.stages}


def _compile_stage(pipeline: str, stage: StageSpec, upstream: set[str]) -> StageTemplates:
    compiled = {}
    for where, text in stage.templates().items():
        try:
            tree = _ENV.parse(text)
        except TemplateError as exc:
            raise PipelineError(pipeline, f"{where}: template error: {exc}", stage.id) from None
        unknown = meta.find_undeclared_variables(tree) - NAMES
        if unknown:
            names = ", ".join(sorted(unknown))
            raise PipelineError(
                pipeline, f"{where}: unknown name(s) {names} (known: {sorted(NAMES)})", stage.id
            )
        for name in _stage_references(tree):
            if name not in upstream:
                problem = (
                    f"{where}: stages.{name} is not a stage this one waits for (after: {list(stage.after)})"
                )
                raise PipelineError(pipeline, problem, stage.id)
        compiled[where] = _ENV.from_string(tree)
    return StageTemplates(stage.id, compiled)


def _name_problem(tree: nodes.Template, upstream: set[str], stage: StageSpec) -> str | None:
    unknown = meta.find_undeclared_variables(tree) - NAMES
    if unknown:
        return f"unknown name(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(NAMES))})"
    for name in sorted(_stage_references(tree) - upstream):
        return f"stages.{name} is not a stage this one waits for (after: {list(stage.after)})"
    return None


def _stage_references(tree: nodes.Template) -> set[str]:
    """The ids read as stages.<id> or stages["<id>"]."""
    found = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "stages":
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "stages"
            and isinstance(item.arg, nodes.Const)
        ):
            found.add(str(item.arg.value))
    return found


def _upstream(spec: PipelineSpec) -> dict[str, set[str]]:
    """Per stage, every stage it waits for, directly or through others (stages come in order)."""
    upstream: dict[str, set[str]] = {}
    for stage in spec.stages:
        upstream[stage.id] = set(stage.after).union(*(upstream[a] for a in stage.after))
    return upstream
