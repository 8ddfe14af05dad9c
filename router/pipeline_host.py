"""What a pipeline run is given: the registered pipeline (CompiledPipeline, pipeline_table.py)
and the router's side of it (PipelineHost)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from swiftserve.router.admission import Gate
from swiftserve.router.pipeline_corpus import Corpus
from swiftserve.router.pipeline_spec import PipelineSpec
from swiftserve.router.pipeline_templates import StageTemplates
from swiftserve.router.pipeline_types import PipelineOutcome


class PipelineHost(Protocol):
    """What a pipeline needs of the router (router.py; duck-typed, as it imports pipeline_run.py)."""

    pool: Any
    default_max_tokens: int

    def handle(self, name: str, kind: str | None = None) -> Any: ...

    def chat_handle(self, name: str) -> Any: ...

    def on_pipeline(self, name: str, outcome: PipelineOutcome) -> None: ...

    async def embed(self, name: str, inputs: list[str]) -> Any: ...


@dataclass(frozen=True)
class CompiledPipeline:
    """A registered pipeline: its spec, compiled templates and indexed corpora (by stage id), and
    the gate its requests in flight pass (its max_queue)."""

    spec: PipelineSpec
    templates: Mapping[str, StageTemplates]
    corpora: Mapping[str, Corpus] = field(default_factory=dict)
    gate: Gate = field(default_factory=lambda: Gate(None), compare=False)
