"""One model's engine: requests in, a step at a time, outputs out. Not thread-safe; the async
engine drives it from a single worker thread.

Each step is three calls: schedule (scheduler/), run (model runner), postprocess (tokens to
text, stop checks, freeing finished sequences).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass, replace

import torch

from swiftserve.config import EngineConfig
from swiftserve.engine.detokenizer import IncrementalDetokenizer
from swiftserve.engine.errors import ContextLengthError, InvalidRequestError, QueueFullError
from swiftserve.engine.fast_forward import ForcedTokenRejectedError, fast_forward, may_fast_forward
from swiftserve.engine.grammar_backend_slot import GrammarBackendSlot
from swiftserve.engine.grammar_compiler import GrammarCompiler
from swiftserve.engine.grammar_stats import GrammarStats, grammar_stats
from swiftserve.engine.postprocess import append_prompt_logprobs, append_token
from swiftserve.engine.request import Completion, Request
from swiftserve.loader import apply_chat_template, load_tokenizer
from swiftserve.loader.model_source import ModelSource, resolve_source
from swiftserve.loader.tokenizer import TokenizerInfo
from swiftserve.model_runner.grammar.interface import CompiledGrammar, GrammarBackend
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend
from swiftserve.model_runner.model_runner import CausalLM, ModelRunner, StepResult
from swiftserve.model_runner.sampler import SamplingState
from swiftserve.outputs import RequestOutput, TokenLogprob
from swiftserve.sampling_params import SamplingParams
from swiftserve.scheduler.batch_scheduler import Scheduler
from swiftserve.scheduler.kv_demand import KvUsage
from swiftserve.scheduler.sequence import Sequence

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    num_free_blocks: int
    num_total_blocks: int
    kv_cache_usage: float
    num_preemptions: int
    num_used_blocks: int = 0
    is_waiting_for_blocks: bool = False  # the last step left a request waiting for KV blocks
    grammar: GrammarStats | None = None  # structured outputs, once a constrained request came


def wanted_max_model_len(config: EngineConfig, model_limit: int, max_kv_tokens: int) -> int:
    """The context asked for: config.max_model_len (or the scheduler's), else the model's own
    limit as far as the KV cache holds one sequence (max_kv_tokens: its whole blocks' tokens).
    Known before loading, so a cold model can validate requests with it."""
    return config.max_model_len or config.scheduler.max_model_len or min(model_limit, max_kv_tokens)


class LLMEngine:
    """source: config.model already resolved (a served model resolves it once, when it is
    registered); None resolves it here. tokenizer: the model's, when the caller has it already
    (a served model keeps its own while cold); parsing tokenizer.json again would cost a cold load
    tens of milliseconds. model: its weights already loaded (a reload from host memory), so they
    are not read again. grammar_backend: the served model's grammar backend slot, kept across its
    engines (None: this engine's own). WrongModelKindError when the model is an embedding model."""

    def __init__(
        self,
        config: EngineConfig,
        tokenizer: TokenizerInfo | None = None,
        model: CausalLM | None = None,
        source: ModelSource | None = None,
        grammar_backend: GrammarBackendSlot | None = None,
    ) -> None:
        self.config = config
        self.source = (source or resolve_source(config.model, config.cache_dir)).expect("chat")
        self.tokenizer = tokenizer or load_tokenizer(self.source.path)
        self.runner = ModelRunner(config, self.source, model)
        self.max_model_len = self._max_model_len()
        # The pool starts at the runner's maximum (lazily committed on CPU); resize_kv moves it.
        self.scheduler = Scheduler(
            replace(config.scheduler, max_model_len=self.max_model_len), self.runner.max_num_blocks
        )
        # One max_model_len sequence must always fit, or a long request could wait forever.
        self.num_floor_blocks = math.ceil(self.max_model_len / config.scheduler.block_size)
        self._warned_kv_cap = False
        self.requests: dict[str, Request] = {}
        self._completions: dict[int, Completion] = {}  # seq id -> completion
        self._ids = itertools.count()
        self.num_forced_tokens = 0  # tokens fast-forwarded (fast_forward.py) since the engine started
        # A partial of the tokenizer and vocabulary only: a slot that outlives this engine must
        # not keep it (its model, its KV cache) alive.
        backend = grammar_backend or GrammarBackendSlot(
            functools.partial(llguidance_backend, self.tokenizer, self.runner.model_config.vocab_size)
        )
        self.grammars = GrammarCompiler(backend, timeout_s=config.grammar_compile_timeout_s)

    def _max_model_len(self) -> int:
        model_limit = self.runner.model_config.max_position_embeddings
        capacity = self.runner.max_num_blocks * self.config.scheduler.block_size
        wanted = wanted_max_model_len(self.config, model_limit, capacity)
        if wanted > model_limit:
            raise ValueError(f"max_model_len {wanted} exceeds the model's limit of {model_limit} positions")
        if wanted > capacity:
            raise ValueError(
                f"max_model_len {wanted} does not fit the KV cache ({capacity} tokens); "
                "raise kv_cache_memory or lower max_model_len"
            )
        return wanted

    @property
    def model_name(self) -> str:
        return self.config.model

    # -- requests ------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return apply_chat_template(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def encode_prompt(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a text or token-id prompt, validated against the vocabulary."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequestError("prompt", "prompt is empty")
            return self.tokenizer.encode(prompt)
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, int) for t in prompt):
            raise InvalidRequestError("prompt", "prompt must be a string or a list of token ids")
        if not prompt:
            raise InvalidRequestError("prompt", "prompt is empty")
        vocab = self.runner.model_config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            message = f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})"
            raise InvalidRequestError("prompt", message)
        return list(prompt)

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        prompt_token_ids: list[int] | None = None,
        priority: int = 0,
        grammar: CompiledGrammar | None = None,
    ) -> Request:
        """Queue a request. Raises InvalidRequestError for bad input (ContextLengthError when it
        does not fit the context), QueueFullError when the queue is full.
        prompt_token_ids, when the caller already encoded `prompt`, spares encoding it again.
        priority: lower runs earlier (vLLM's sense): admitted ahead of less urgent waiting
        requests, preempted after them (scheduler/batch_scheduler.py).
        grammar: params.structured_outputs already compiled (the async engine compiles it off this
        thread); without it a constraint is compiled here, blocking. GrammarError when it cannot be."""
        if request_id in self.requests:
            raise InvalidRequestError("request_id", f"request id {request_id!r} is already in use")
        token_ids = self.encode_prompt(prompt) if prompt_token_ids is None else prompt_token_ids
        self._check_length(len(token_ids), params)
        if not self.scheduler.can_accept(params.n):
            raise QueueFullError(f"the queue of model {self.model_name!r} is full")
        if params.structured_outputs is not None and grammar is None:
            grammar = self.grammars.compile(params.structured_outputs)
        text = prompt if isinstance(prompt, str) else None
        request = Request(request_id, text, token_ids, params, priority=priority)
        for index in range(params.n):
            completion = self._new_completion(request_id, index, token_ids, params, priority)
            if grammar is not None:
                completion.state.grammar = grammar.new_matcher()
            request.completions.append(completion)
        if params.prompt_logprobs is not None:
            # The first completion's prefill scores the prompt (the others share it).
            request.prompt_logprobs = [None]
            request.completions[0].seq.needs_prompt_logprobs = len(token_ids) > 1
        self.requests[request_id] = request
        for completion in request.completions:
            self._completions[completion.seq.seq_id] = completion
            self.scheduler.add(completion.seq)
        return request

    def _check_length(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        sizes = (num_prompt_tokens, params.max_tokens, self.max_model_len)
        if num_prompt_tokens >= self.max_model_len:  # no room for even one token: the prompt is to blame
            raise ContextLengthError(*sizes, param="prompt")
        if num_prompt_tokens + params.max_tokens > self.max_model_len:
            raise ContextLengthError(*sizes, param="max_tokens")

    def _new_completion(
        self, request_id: str, index: int, token_ids: list[int], params: SamplingParams, priority: int
    ) -> Completion:
        seq = Sequence.from_prompt(next(self._ids), token_ids, priority)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.runner.device).manual_seed(params.seed + index)
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= set(self.tokenizer.eos_token_ids)
        state = SamplingState(params, token_ids, [], frozenset(stop_ids), generator)
        detok = IncrementalDetokenizer(self.tokenizer.tokenizer, token_ids, params.skip_special_tokens)
        logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        return Completion(request_id, index, seq, state, detok, logprobs=logprobs)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request wherever it is and free its blocks; its last output (finish_reason
        "abort" on every completion still running), or None for an unknown id."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        for completion in request.completions:
            self._completions.pop(completion.seq.seq_id, None)
            completion.state.grammar = None
            if completion.finish_reason is None:
                completion.finish_reason = "abort"
                self.scheduler.abort(completion.seq)
        return request.to_output()

    def close(self) -> None:
        """Stops the engine's helper threads: grammar compiles and the runner's mask fills."""
        self.grammars.shutdown()
        if self.runner is not None:  # None once released (memory.py)
            self.runner.close()

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # -- the step ------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        out = self.scheduler.schedule()
        if out.is_empty:
            return []
        states = {s: c.state for s, c in self._completions.items()}
        result = self.runner.run(out, states, self.grammars.backend)
        self.scheduler.update(out)
        return self._postprocess(result)

    def _postprocess(self, result: StepResult) -> list[RequestOutput]:
        touched: dict[str, Request] = {}
        now = time.monotonic()
        for scored in result.prompt_logprobs:
            completion = self._completions.get(scored.seq_id)
            if completion is not None:  # else aborted while the step ran
                append_prompt_logprobs(self.requests[completion.request_id], completion, scored)
        failed = result.output.failed
        rows = zip(result.sampled, result.output.token_ids, result.output.logprobs, strict=True)
        for row, (item, token_id, logprob) in enumerate(rows):
            completion = self._completions.get(item.seq.seq_id)
            if completion is None:  # its request failed on an earlier row of this step
                continue
            reason = failed.get(row) or self._advance(completion, token_id, logprob)
            if reason is not None:
                touched[completion.request_id] = self._fail(completion.request_id, reason)
                continue
            if completion.finish_reason is not None:
                self.scheduler.finish(completion.seq)
                del self._completions[completion.seq.seq_id]
                completion.state.grammar = None
            request = self.requests[completion.request_id]
            request.first_token_time = request.first_token_time or now
            # Outputs are cumulative: another completion's tokens wait until the first one's
            # prefill has scored the whole prompt, so every output carries all prompt logprobs.
            if not request.is_scoring_prompt:
                touched[request.request_id] = request
        outputs = [request.to_output() for request in touched.values()]
        for output in outputs:
            if output.finished:
                del self.requests[output.request_id]
        return outputs

    def _advance(self, completion: Completion, token_id: int, logprob: TokenLogprob | None) -> str | None:
        """Records a sampled token, and the tokens its grammar then forces when fast-forwarding;
        why the request must fail instead, if it must."""
        grammar = completion.state.grammar
        if grammar is not None and not grammar.accept(token_id):  # the mask allowed it: a bug
            return f"the grammar rejected sampled token {token_id}: {grammar.error()}"
        append_token(completion, token_id, logprob, self.max_model_len)
        if not (self.config.grammar_fast_forward and may_fast_forward(completion)):
            return None
        try:
            self.num_forced_tokens += fast_forward(completion, self.max_model_len)
        except ForcedTokenRejectedError as exc:
            return str(exc)
        return None

    def _fail(self, request_id: str, reason: str) -> Request:
        """Ends one request that failed in a step, freeing its blocks; the rest of the batch goes on."""
        request = self.requests[request_id]
        request.error = reason
        for completion in request.completions:
            self._completions.pop(completion.seq.seq_id, None)
            completion.state.grammar = None
            if completion.finish_reason is None:
                completion.finish_reason = "abort"
                self.scheduler.abort(completion.seq)
        return request

    # -- the KV cache that follows demand ------------------------------------------------------
    def resize_kv(self, num_blocks: int) -> int:
        """Resize the KV block pool to num_blocks, kept within [floor, the cache's maximum]; the
        number of blocks still backed by memory (more than asked while in-use tail blocks keep a
        shrink waiting: call again later to finish it). The memory of dropped blocks goes back.
        Run it where the engine steps (the executor thread), never during a step."""
        wanted = max(num_blocks, self.num_floor_blocks)
        if wanted > self.runner.max_num_blocks and not self._warned_kv_cap:
            self._warned_kv_cap = True  # once: a starved model asks on every tick
            logger.warning(
                "%s: the KV cache cannot grow past %d blocks (%s)",
                self.model_name,
                self.runner.max_num_blocks,
                "its kv_cache_memory" if self.runner.kv_cache.commits_on_use else "allocated at load on CUDA",
            )
        bm = self.scheduler.block_manager
        backed_before = bm.num_backed_blocks
        backed = self.scheduler.resize(min(wanted, self.runner.max_num_blocks))
        self.runner.release_kv_blocks(backed, backed_before)
        # Retired blocks no one holds wait only for a tail block in use: their memory goes now.
        for start, end in bm.free_retired_runs():
            self.runner.release_kv_blocks(start, end)
        return backed

    def kv_usage(self) -> KvUsage:
        bm = self.scheduler.block_manager
        return KvUsage(
            num_used_blocks=bm.num_used_blocks,
            num_blocks=bm.num_blocks,
            num_backed_blocks=bm.num_backed_blocks,
            num_floor_blocks=self.num_floor_blocks,
            num_max_blocks=self.runner.max_num_blocks,
            is_waiting_for_blocks=self._is_waiting_for_blocks(),
            commits_on_use=self.runner.kv_cache.commits_on_use,
        )

    def _is_waiting_for_blocks(self) -> bool:
        return self.scheduler.is_short_of_blocks and bool(self.scheduler.waiting)

    def stats(self) -> EngineStats:
        bm = self.scheduler.block_manager
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_free_blocks=bm.num_free_blocks,
            num_total_blocks=bm.num_blocks,
            kv_cache_usage=bm.usage,
            num_preemptions=self.scheduler.num_preemptions,
            num_used_blocks=bm.num_used_blocks,
            is_waiting_for_blocks=self._is_waiting_for_blocks(),
            grammar=self._grammar_stats(),
        )

    def _grammar_stats(self) -> GrammarStats | None:
        if not self.grammars.was_asked:  # a backend built ahead of any request is no news
            return None
        return grammar_stats(self.grammars.stats, self.runner.mask_timings)


def llguidance_backend(tokenizer: TokenizerInfo, vocab_size: int) -> GrammarBackend:
    """The model's llguidance backend; vocab_size: the width of its logits."""
    return LLGuidanceBackend(tokenizer.tokenizer, vocab_size, tokenizer.eos_token_ids)
