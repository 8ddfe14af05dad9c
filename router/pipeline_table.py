"""The pipelines a router serves: each checked against the served models, its templates compiled
and its corpora indexed when it is added, so a request finds it ready."""

from __future__ import annotations

import asyncio

from swiftserve.router import errors
from swiftserve.router.admission import Gate
from swiftserve.router.pipeline_corpus import Corpus, CorpusError, read_corpus
from swiftserve.router.pipeline_host import CompiledPipeline, PipelineHost
from swiftserve.router.pipeline_spec import GENERATING, PipelineError, PipelineSpec, StageSpec
from swiftserve.router.pipeline_templates import compile_pipeline
from swiftserve.router.prompts import sampling_params

# The stage kinds by the model kind they call.
_MODEL_KIND = {"chat": "chat", "completion": "chat", "embed": "embedding", "retrieve": "embedding"}


class PipelineTable:
    def __init__(self) -> None:
        self._pipelines: dict[str, CompiledPipeline] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._pipelines

    def names(self) -> list[str]:
        return list(self._pipelines)

    def get(self, name: str) -> CompiledPipeline:
        pipeline = self._pipelines.get(name)
        if pipeline is None:
            raise errors.UnknownPipelineError(name)
        return pipeline

    def remove(self, name: str) -> None:
        self.get(name)
        del self._pipelines[name]

    async def add(self, host: PipelineHost, spec: PipelineSpec, model_names: list[str]) -> None:
        """Checks `spec` against the served models (PipelineError naming the pipeline and the
        stage), compiles its templates and indexes its corpora (embedding them: this loads the
        embedding model)."""
        if spec.name in self._pipelines or spec.name in model_names:
            raise PipelineError(spec.name, "a model or another pipeline is served under this name")
        for stage in spec.stages:
            _check_model(spec.name, stage, host)
            _check_sampling(spec.name, stage)
        templates = compile_pipeline(spec)
        corpora = {s.id: await _index(spec.name, s, host) for s in spec.stages if s.kind == "retrieve"}
        self._pipelines[spec.name] = CompiledPipeline(spec, templates, corpora, Gate(spec.max_queue))


def _check_model(pipeline: str, stage: StageSpec, host: PipelineHost) -> None:
    try:
        host.handle(stage.model, _MODEL_KIND[stage.kind])
    except (errors.ModelNotFoundError, errors.WrongKindError) as exc:
        raise PipelineError(pipeline, f"model: {exc}", stage.id) from None


def _check_sampling(pipeline: str, stage: StageSpec) -> None:
    if stage.kind not in GENERATING:
        return
    sampling = {k: v for k, v in stage.sampling.items() if k != "max_tokens"}
    max_tokens = stage.sampling.get("max_tokens", 1)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise PipelineError(pipeline, f"max_tokens: a positive integer, got {max_tokens!r}", stage.id)
    try:
        sampling_params(max_tokens, sampling)
    except errors.InvalidParameterError as exc:
        raise PipelineError(pipeline, f"sampling: {exc}", stage.id) from None


async def _index(pipeline: str, stage: StageSpec, host: PipelineHost) -> Corpus:
    assert stage.corpus is not None  # a retrieve stage has one (pipeline_spec checks)
    try:
        passages = await asyncio.to_thread(read_corpus, stage.corpus)
    except CorpusError as exc:
        raise PipelineError(pipeline, f"corpus: {exc}", stage.id) from None

    async def embed(texts: list[str]):
        return (await host.embed(stage.model, texts)).embeddings

    return await Corpus.build(passages, embed)
