"""The offline Python API: `LLM(model).generate(prompts, params)` and `.chat(messages, params)`."""

from __future__ import annotations

from collections.abc import Sequence

from swiftserve.config import EngineConfig
from swiftserve.engine.llm_engine import LLMEngine
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams

Prompt = str | list[int]


class LLM:
    """One model in this process. Keyword arguments are EngineConfig fields, or SchedulerConfig
    fields (max_num_seqs, max_num_batched_tokens, block_size, enable_prefix_caching, ...)."""

    def __init__(self, model: str, **kwargs) -> None:
        self.engine = LLMEngine(EngineConfig.of(model, **kwargs))
        self._next_id = 0

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run all prompts together (continuous batching) and return their outputs in order.
        A bad prompt raises ValueError before any prompt runs."""
        prompts = _as_prompt_list(prompts)
        params_list = _as_params_list(params, len(prompts))
        token_ids = [self.engine.encode_prompt(prompt) for prompt in prompts]
        for ids, p in zip(token_ids, params_list, strict=True):
            self.engine._check_length(len(ids), p)
        return self._run(prompts, token_ids, params_list)

    def chat(
        self,
        messages: list[dict] | Sequence[list[dict]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Render each conversation with the model's chat template and generate the reply."""
        conversations = _as_conversations(messages)
        prompts = [self.chat_prompt_ids(c) for c in conversations]
        return self.generate(prompts, params)

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt token ids for a conversation (the template already carries special tokens)."""
        text = self.engine.apply_chat_template(messages, add_generation_prompt=True)
        return self.engine.tokenizer.encode(text, add_special_tokens=False)

    def _run(
        self, prompts: list[Prompt], token_ids: list[list[int]], params_list: list[SamplingParams]
    ) -> list[RequestOutput]:
        ids = []
        try:
            for prompt, prompt_ids, p in zip(prompts, token_ids, params_list, strict=True):
                ids.append(f"llm-{self._next_id}")
                self._next_id += 1
                self.engine.add_request(ids[-1], prompt, p, prompt_token_ids=prompt_ids)
            finals: dict[str, RequestOutput] = {}
            while len(finals) < len(ids):
                for output in self.engine.step():
                    if output.finished:
                        finals[output.request_id] = output
        finally:
            for request_id in ids:
                self.engine.abort_request(request_id)  # no-op for finished ones; frees blocks on error
        return [finals[i] for i in ids]


def _as_conversations(messages: list[dict] | Sequence[list[dict]]) -> list[list[dict]]:
    """One conversation (a list of message dicts) or several -> the list of them, none empty."""
    if messages and all(isinstance(m, dict) for m in messages):
        return [[m for m in messages if isinstance(m, dict)]]
    conversations = [c for c in messages if isinstance(c, list) and c]
    if not conversations or len(conversations) != len(messages):
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    return conversations


def _as_prompt_list(prompts) -> list[Prompt]:
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
        return [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    return prompts


def _as_params_list(params, n: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * n
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    return params
