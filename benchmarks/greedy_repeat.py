"""Greedy repeatability: does the same greedy (temperature 0) chat request give the same answer twice?

In bfloat16 it need not: a prefix-cache hit computes the prompt's tail against cached keys and
values, and a request batched with others runs through kernels of other shapes; both change how
values round, and a near-tie between the two best tokens can flip. This counts how often it
happens on 50 seeded chat prompts (varied topics and lengths), and for each flip records the
first differing position and the top-2 logprob gap (= logit gap) there in the first run.

Comparisons, each against the same request run alone:
  prefix_cache_hit  the request again, alone, in the engine whose prefix cache now holds it
  batched           all 50 requests at once, in an engine without prefix caching
  batched_cached    all 50 at once in the engine that already cached them

It also times the LM head (final hidden states -> float32 logits, model.compute_logits plus
the runner's conversion) for a few row counts: the per-step cost the logits' precision costs.

    python benchmarks/greedy_repeat.py [--label before] [--dtype bfloat16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import print_table, write_json
from swiftserve import LLM, SamplingParams
from swiftserve.loader import resolve_model

TOPICS = [
    "the water cycle", "black holes", "the French Revolution", "photosynthesis", "sourdough bread",
    "the stock market", "volcanoes", "machine learning", "the Roman Empire", "jazz music",
    "climate change", "the human heart", "chess openings", "electric cars", "honeybees",
    "the Moon landing", "quantum computing", "coffee", "the Great Wall of China", "vaccines",
    "plate tectonics", "Shakespeare", "recycling", "the Internet", "dinosaurs",
]  # fmt: skip
TASKS = [
    "Explain {t} to a ten-year-old.",
    "Give me three surprising facts about {t}.",
    "Write a short poem about {t}.",
    "What are the main arguments for and against {t}?",
    "Summarize the history of {t} in a few sentences.",
    "List five questions a student might ask about {t}, with short answers.",
    "Write a haiku about {t}.",
    "How would you teach {t} in one lesson?",
]
FILLER = [
    "I am preparing notes for a study group and want them to be accurate.",
    "Please keep the tone friendly and avoid jargon where you can.",
    "My previous attempt at this was too long and nobody read it.",
    "The audience is mixed: some experts, some complete beginners.",
    "Use plain sentences; bullet points are fine if they help.",
    "I will read this aloud, so avoid tables and code.",
    "Earlier we talked about something else entirely, so start fresh.",
    "If you are unsure about a detail, say so rather than guessing.",
]
CONDITIONS = ("prefix_cache_hit", "batched", "batched_cached")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def make_conversations(num: int, seed: int) -> list[list[dict]]:
    """Seeded chat prompts: a topic and a task, after 0..12 context sentences (varied lengths),
    some with a system message."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(num):
        context = " ".join(rng.choice(FILLER) for _ in range(rng.choice([0, 0, 1, 2, 4, 8, 12])))
        question = rng.choice(TASKS).format(t=rng.choice(TOPICS))
        messages = [{"role": "user", "content": f"{context} {question}".strip()}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": "You are a concise, careful assistant."})
        conversations.append(messages)
    return conversations


def run(llm: LLM, prompts: list[list[int]], params: SamplingParams, together: bool) -> list:
    """The completion of each prompt, run one request at a time or all at once."""
    if together:
        return [out.outputs[0] for out in llm.generate(prompts, params)]
    return [llm.generate([prompt], params)[0].outputs[0] for prompt in prompts]


def compare(first: list, second: list) -> tuple[dict, list[dict]]:
    """Flips between two runs of the same prompts: where they first differ and the top-2 gap
    (logprob of the best minus the second best token) the first run saw there."""
    flips = []
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        position = next(
            (p for p, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y),
            None if len(a.token_ids) == len(b.token_ids) else min(len(a.token_ids), len(b.token_ids)),
        )
        if position is None:
            continue
        gaps = [_top2_gap(run.logprobs, position) for run in (a, b)]
        flips.append(
            {
                "prompt": index,
                "position": position,
                "first_tokens": len(a.token_ids),
                "second_tokens": len(b.token_ids),
                "top2_gap_first": gaps[0],
                "top2_gap_second": gaps[1],
            }
        )
    first_gaps = [f["top2_gap_first"] for f in flips if f["top2_gap_first"] is not None]
    summary = {
        "num_prompts": len(first),
        "num_flips": len(flips),
        "flip_rate": len(flips) / len(first),
        "median_flip_position": _median([f["position"] for f in flips]),
        "max_top2_gap_at_flip": max(first_gaps, default=None),
        "num_exact_ties_at_flip": sum(g == 0.0 for g in first_gaps),
    }
    return summary, flips


def _top2_gap(logprobs, position: int) -> float | None:
    if logprobs is None or position >= len(logprobs) or len(logprobs[position].top) < 2:
        return None
    top = logprobs[position].top
    return top[0][1] - top[1][1]


def _median(values: list) -> float | None:
    values = sorted(values)
    return None if not values else values[len(values) // 2]


def time_lm_head(llm: LLM, row_counts: list[int], repeats: int) -> list[dict]:
    """Median ms of hidden -> float32 logits as the model runner does it, per row count. Random
    hidden states have flatter rows than a model's: a bound on the work near the top."""
    runner = llm.engine.runner
    model = runner.model
    hidden_size = runner.model_config.hidden_size
    # The runner's own path where it has one (float32 logits); before it, the model's and a cast.
    compute = getattr(runner, "compute_logits", None) or (lambda h: model.compute_logits(h).float())
    rows = []
    for num_rows in row_counts:
        hidden = torch.randn(num_rows, hidden_size, dtype=runner.dtype)
        times = []
        with torch.inference_mode():
            for _ in range(repeats + 2):
                start = time.perf_counter()
                logits = compute(hidden)
                times.append(time.perf_counter() - start)
        times = sorted(times[2:])
        weight_bytes = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
        ms = 1e3 * times[len(times) // 2]
        rows.append(
            {
                "rows": num_rows,
                "ms": ms,
                "weight_GB_per_s": weight_bytes / (ms / 1e3) / 1e9,
                "logits_dtype": str(logits.dtype).removeprefix("torch."),
            }
        )
    return rows


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--num-prompts", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-head-rows", default="1,4,8,16,64,128")
    parser.add_argument("--lm-head-repeats", type=int, default=30)
    parser.add_argument("--label", default="run", help="names the result file (e.g. before, after)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/greedy_repeat_<label>.json")
    args = parser.parse_args()

    folder = str(resolve_model(args.model))
    common = dict(dtype=args.dtype, device="cpu", max_model_len=2048, kv_cache_memory=1 << 30)
    cached = LLM(folder, **common)
    uncached = LLM(folder, enable_prefix_caching=False, **common)
    conversations = make_conversations(args.num_prompts, args.seed)
    prompts = [cached.chat_prompt_ids(c) for c in conversations]
    # logprobs=2: the top-2 gap at a flip. It reads the logits and changes no token.
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, logprobs=2)

    start = time.perf_counter()
    alone_cached = run(cached, prompts, params, together=False)  # fills the prefix cache
    second_alone = run(cached, prompts, params, together=False)
    batched_cached = run(cached, prompts, params, together=True)
    alone = run(uncached, prompts, params, together=False)
    batched = run(uncached, prompts, params, together=True)
    seconds = time.perf_counter() - start

    pairs = {
        "prefix_cache_hit": (alone_cached, second_alone),
        "batched": (alone, batched),
        "batched_cached": (alone_cached, batched_cached),
    }
    summaries, details = {}, {}
    for name in CONDITIONS:
        summaries[name], details[name] = compare(*pairs[name])
    print(f"{args.num_prompts} prompts ({min(map(len, prompts))}..{max(map(len, prompts))} tokens), "
          f"{args.max_tokens} greedy tokens, {args.dtype}, commit {_commit()}, {seconds:.0f} s")  # fmt: skip
    print_table(
        [{"condition": name, **summaries[name]} for name in CONDITIONS],
        ["condition", "num_flips", "flip_rate", "median_flip_position", "max_top2_gap_at_flip",
         "num_exact_ties_at_flip"],
    )  # fmt: skip
    lm_head = time_lm_head(cached, [int(r) for r in args.lm_head_rows.split(",")], args.lm_head_repeats)
    print_table(lm_head, ["rows", "ms", "weight_GB_per_s", "logits_dtype"])
    write_json(
        args.out or f"benchmarks/results/greedy_repeat_{args.label}.json",
        {
            "args": vars(args),
            "commit": _commit(),
            "prompt_tokens": [len(p) for p in prompts],
            "seconds": seconds,
            "summary": summaries,
            "flips": details,
            "lm_head": lm_head,
        },
    )


if __name__ == "__main__":
    main()
