"""swiftserve: a high-performance inference server for compound AI systems."""

from swiftserve.outputs import CompletionOutput, RequestOutput, TokenLogprob
from swiftserve.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "Server",
    "AsyncEngine",
    "EmbeddingEngine",
    "EngineConfig",
    "Pipeline",
    "Stage",
    "Message",
    "FollowerConfig",
    "SamplingParams",
    "RequestOutput",
    "CompletionOutput",
    "TokenLogprob",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy engine imports (torch, tokenizers) wait until someone asks for them.
    if name == "LLM":
        from swiftserve.engine.llm import LLM

        return LLM
    if name == "Server":
        from swiftserve.router.local_server import Server

        return Server
    if name == "AsyncEngine":
        from swiftserve.engine.async_engine import AsyncEngine

        return AsyncEngine
    if name == "EmbeddingEngine":
        from swiftserve.engine.embedding_engine import EmbeddingEngine

        return EmbeddingEngine
    if name in ("Pipeline", "Stage", "Message"):
        from swiftserve.router import pipeline_spec

        return {
            "Pipeline": pipeline_spec.PipelineSpec,
            "Stage": pipeline_spec.StageSpec,
            "Message": pipeline_spec.Message,
        }[name]
    if name == "FollowerConfig":
        from swiftserve.router.followers import FollowerConfig

        return FollowerConfig
    if name == "EngineConfig":
        from swiftserve.config import EngineConfig

        return EngineConfig
    raise AttributeError(f"module 'swiftserve' has no attribute {name!r}")
