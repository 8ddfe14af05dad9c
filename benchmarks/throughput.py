"""Offline throughput: swiftserve's engine against Hugging Face transformers `generate`.

One seeded set of requests (prompts of 16..1024 tokens, outputs of 16..256 tokens, ignore_eos),
all submitted at once to swiftserve; transformers runs them as static padded batches of 16 (the
way one would batch with `generate`), and only each request's own tokens count as output. Also:
single-request decode speed, achieved GFLOP/s (2 x parameters x tokens/s) against this machine's
matmul rate measured in the same run, and the engine's per-step time outside the model forward.

    python benchmarks/throughput.py [--model smollm2-135m-instruct] [--num-requests 128]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path

import torch

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import matmul_gflops, print_table, write_json
from benchmarks.op_timer import OpTimer
from swiftserve import LLM, SamplingParams
from swiftserve.loader import resolve_model

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def make_workload(num_requests: int, vocab: int, seed: int, max_prompt: int, max_output: int):
    rng = random.Random(seed)
    prompts = [
        [rng.randrange(100, vocab) for _ in range(rng.randint(16, max_prompt))] for _ in range(num_requests)
    ]
    outputs = [rng.randint(16, max_output) for _ in range(num_requests)]
    return prompts, outputs


def run_swiftserve(llm: LLM, prompts, output_lens) -> dict:
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in output_lens]
    timer = _StepTimer(llm)
    start = time.perf_counter()
    results = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    produced = sum(len(r.outputs[0].token_ids) for r in results)
    assert produced == sum(output_lens), "swiftserve produced a different number of tokens"
    return {
        "seconds": elapsed,
        "output_tokens": produced,
        "tokens_per_s": produced / elapsed,
        **timer.summary(),
    }


class _StepTimer:
    """Splits each engine step into the model (forward and LM head), sampling and the rest
    (scheduling, input preparation, detokenization, stop checks): the engine's own CPU overhead."""

    def __init__(self, llm: LLM) -> None:
        self.forward = self.sample = self.step = 0.0
        self.num_steps = 0
        runner, engine = llm.engine.runner, llm.engine
        runner.model.forward = self._timed(runner.model.forward, "forward")
        # The LM head (up to 128 rows x 49k vocab) is model compute too, not engine overhead.
        runner.model.compute_logits = self._timed(runner.model.compute_logits, "forward")
        runner.sampler = _TimedSampler(runner.sampler, self)
        engine.step = self._timed(engine.step, "step")

    def _timed(self, fn, name: str):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, name, getattr(self, name) + time.perf_counter() - start)
                self.num_steps += name == "step"

        return wrapper

    def summary(self) -> dict:
        n = max(self.num_steps, 1)
        return {
            "steps": self.num_steps,
            "model_ms_per_step": 1e3 * self.forward / n,  # forward + LM head
            "sample_ms_per_step": 1e3 * self.sample / n,
            "overhead_ms_per_step": 1e3 * (self.step - self.forward - self.sample) / n,
        }


class _TimedSampler:
    def __init__(self, sampler, timer: _StepTimer) -> None:
        self.sampler, self.timer = sampler, timer

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            return self.sampler(*args)
        finally:
            self.timer.sample += time.perf_counter() - start


def run_transformers(model, pad_id: int, prompts, output_lens, batch_size: int) -> dict:
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        batch, lens = prompts[i : i + batch_size], output_lens[i : i + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch])  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max(lens),
                min_new_tokens=max(lens),
                pad_token_id=pad_id,
            )
    elapsed = time.perf_counter() - start
    useful = sum(output_lens)
    return {"seconds": elapsed, "output_tokens": useful, "tokens_per_s": useful / elapsed}


def single_stream(llm: LLM, prompt: list[int], num_tokens: int) -> float:
    params = SamplingParams(temperature=0.0, max_tokens=num_tokens, ignore_eos=True)
    llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))  # warm up
    start = time.perf_counter()
    llm.generate([prompt], params)
    return num_tokens / (time.perf_counter() - start)


def single_stream_hf(hf_model, prompt: list[int], num_tokens: int) -> float:
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        hf_model.generate(ids, do_sample=False, max_new_tokens=4, min_new_tokens=4)
        start = time.perf_counter()
        hf_model.generate(ids, do_sample=False, max_new_tokens=num_tokens, min_new_tokens=num_tokens)
    return num_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--num-requests", type=int, default=128)
    parser.add_argument("--max-prompt", type=int, default=1024)
    parser.add_argument("--max-output", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=128)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--skip-hf", action="store_true", help="only run swiftserve")
    parser.add_argument("--kernel-backend", default=None, help="force one kernel backend (e.g. torch)")
    parser.add_argument("--op-times", action="store_true", help="also time every native op and torch linear")
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()

    peak = matmul_gflops(DTYPES[args.dtype])
    folder = resolve_model(args.model)
    llm = LLM(
        str(folder),
        dtype=args.dtype,
        device="cpu",
        max_model_len=max(args.max_prompt + args.max_output, 512),
        kv_cache_memory=3 << 30,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kernel_backend=args.kernel_backend,
    )
    params_count = llm.engine.runner.model_config.num_parameters
    prompts, output_lens = make_workload(
        args.num_requests,
        llm.engine.runner.model_config.vocab_size,
        args.seed,
        args.max_prompt,
        args.max_output,
    )
    with OpTimer() if args.op_times else contextlib.nullcontext() as timer:
        ours = run_swiftserve(llm, prompts, output_lens)
    if timer is not None:  # where the run's time went; the timers add well under 1%
        ours["op_seconds"] = dict(sorted(timer.seconds.items(), key=lambda kv: -kv[1]))
        print_table(
            [{"op": op, "seconds": t, "share": t / ours["seconds"]} for op, t in ours["op_seconds"].items()],
            ["op", "seconds", "share"],
        )
    ours["gflops"] = 2 * params_count * ours["tokens_per_s"] / 1e9
    ours["fraction_of_matmul_peak"] = ours["gflops"] / peak
    # The workload holds ~4x more prompt than output tokens: this counts the work of both.
    all_tokens = sum(map(len, prompts)) + ours["output_tokens"]
    ours["gflops_all_tokens"] = 2 * params_count * all_tokens / ours["seconds"] / 1e9
    rows = [{"engine": "swiftserve", **ours}]
    result = {"args": vars(args), "matmul_gflops": peak, "parameters": params_count, "swiftserve": ours}
    if not args.skip_hf:
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=DTYPES[args.dtype], attn_implementation="sdpa"
        ).eval()
        theirs = run_transformers(
            hf, llm.tokenizer.eos_token_ids[0], prompts, output_lens, args.hf_batch_size
        )
        theirs["gflops"] = 2 * params_count * theirs["tokens_per_s"] / 1e9
        theirs["fraction_of_matmul_peak"] = theirs["gflops"] / peak
        all_tokens = sum(map(len, prompts)) + theirs["output_tokens"]
        theirs["gflops_all_tokens"] = 2 * params_count * all_tokens / theirs["seconds"] / 1e9
        rows.append({"engine": f"transformers (static batches of {args.hf_batch_size})", **theirs})
        prompt = prompts[0][:128]
        single_ours, single_hf = single_stream(llm, prompt, 128), single_stream_hf(hf, prompt, 128)
        model, fused = llm.engine.runner.model, llm.engine.runner.model.fused_decode
        model.fused_decode = None  # the same decode op by op: what the fused native call saves
        single_unfused = single_stream(llm, prompt, 128)
        model.fused_decode = fused
        result.update(
            transformers=theirs,
            throughput_ratio=ours["tokens_per_s"] / theirs["tokens_per_s"],
            single_stream={
                "swiftserve_tokens_per_s": single_ours,
                "swiftserve_op_by_op_tokens_per_s": single_unfused,
                "transformers_tokens_per_s": single_hf,
                "ratio": single_ours / single_hf,
            },
        )
    print(f"\nbf16 matmul peak measured now: {peak:.0f} GFLOP/s; model parameters: {params_count / 1e6:.1f}M")
    print_table(
        rows, ["engine", "seconds", "output_tokens", "tokens_per_s", "gflops", "fraction_of_matmul_peak"]
    )
    print(
        f"\nswiftserve per step: model (forward + LM head) {ours['model_ms_per_step']:.2f} ms, sampling "
        f"{ours['sample_ms_per_step']:.2f} ms, engine overhead {ours['overhead_ms_per_step']:.2f} ms "
        f"({ours['steps']} steps)"
    )
    if "throughput_ratio" in result:
        s = result["single_stream"]
        print(f"throughput ratio swiftserve / transformers: {result['throughput_ratio']:.2f}x")
        print(
            f"single stream: swiftserve {s['swiftserve_tokens_per_s']:.1f} tok/s, transformers "
            f"{s['transformers_tokens_per_s']:.1f} tok/s, ratio {s['ratio']:.2f}x "
            f"(op by op, without the fused decode: {s['swiftserve_op_by_op_tokens_per_s']:.1f} tok/s)"
        )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
