"""Structured outputs: what constraining costs. Decode throughput at 1, 16 and 64 concurrent
requests, all constrained by a JSON schema, against the same requests unconstrained; the mask fill
time per step and per row (p50 / p99); grammar compile times, cold and cached, for the test schemas
and a tool list of 20 functions.

Both sides produce exactly max_tokens tokens per request: the constrained ones follow a schema
that cannot end sooner (an array of at least 1000 integers), the free ones ignore EOS.

--peer llamacpp: the same requests over HTTP to a llama-cpp-python server on the model's GGUF
(benchmarks/structured_llamacpp.py), its tokens/s constrained and free beside ours.

    python benchmarks/structured.py [--models smollm2-135m-instruct,gemma-3-270m] [--max-tokens 32]
        [--concurrency 1,16,64] [--rounds 3] [--peer llamacpp]

Free and constrained runs alternate (`--rounds` of each per level); each side reports its median
round, so a busy spell of the host falls on both. [--peer llamacpp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # appended: kernels/ must not shadow `kernels`
from swiftserve.router.tool_format import Tool, call_constraint

from benchmarks.common import print_table, write_json
from swiftserve import LLM, SamplingParams
from swiftserve.engine.grammar_compiler import GrammarCompiler
from swiftserve.engine.grammar_stats import percentile
from swiftserve.structured_outputs import StructuredOutputs

PROMPT = "List numbers as a JSON array."
LONG = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999}, "minItems": 1000}
SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "city": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "tags"],
            }
        },
        "required": ["city"],
    },
    "enum+bounds": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "score": {"type": "number", "minimum": 0, "maximum": 10},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
        },
        "required": ["color", "score", "code"],
    },
}


def twenty_tools() -> StructuredOutputs:
    tools = [
        Tool(
            f"tool_{i}",
            f"tool number {i}",
            {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer"},
                    "flag": {"type": "boolean"},
                },
                "required": ["query"],
            },
        )
        for i in range(20)
    ]
    return call_constraint(tools, parallel=True)


def decode_run(llm: LLM, prompt: list[int], concurrency: int, max_tokens: int, constrained: bool) -> dict:
    spec = StructuredOutputs(json=LONG) if constrained else None
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, structured_outputs=spec)
    llm.generate(
        [prompt], SamplingParams(temperature=0, max_tokens=2, structured_outputs=spec)
    )  # warm, compile
    timings = llm.engine.runner.mask_timings
    timings.fill_s.clear(), timings.fill_per_row_s.clear(), timings.apply_s.clear()
    start = time.perf_counter()
    outs = llm.generate([prompt] * concurrency, params)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    assert tokens == concurrency * max_tokens, "a request ended early"
    row = {
        "system": "swiftserve",
        "concurrency": concurrency,
        "constrained": constrained,
        "tokens_per_s": tokens / elapsed,
    }
    if constrained:
        row |= {
            "fill_step_p50_ms": 1e3 * percentile(list(timings.fill_s), 0.5),
            "fill_step_p99_ms": 1e3 * percentile(list(timings.fill_s), 0.99),
            "fill_row_p50_ms": 1e3 * percentile(list(timings.fill_per_row_s), 0.5),
            "fill_row_p99_ms": 1e3 * percentile(list(timings.fill_per_row_s), 0.99),
            "apply_step_p99_ms": 1e3 * percentile(list(timings.apply_s), 0.99),
        }
    return row


def compile_times(llm: LLM, repeats: int) -> list[dict]:
    backend = llm.engine.grammars.backend
    assert backend is not None, "run a constrained request first"
    specs = {name: StructuredOutputs(json=schema) for name, schema in SCHEMAS.items()}
    specs["20 tools"] = twenty_tools()
    rows = []
    for name, spec in specs.items():
        cold = []
        for _ in range(repeats):
            start = time.perf_counter()
            backend.compile(spec)
            cold.append(time.perf_counter() - start)
        compiler = GrammarCompiler(lambda: backend)
        compiler.compile(spec)
        cached = []
        for _ in range(repeats):
            start = time.perf_counter()
            compiler.compile(spec).new_matcher()
            cached.append(time.perf_counter() - start)
        compiler.shutdown()
        rows.append(
            {
                "grammar": name,
                "cold_ms": 1e3 * statistics.median(cold),
                "cached_ms": 1e3 * statistics.median(cached),
            }
        )
    return rows


def interleaved(llm: LLM, prompt: list[int], concurrency: int, max_tokens: int, rounds: int) -> list[dict]:
    """Free and constrained runs in turn, `rounds` times each, so that a busy spell of the host
    hits both sides alike; each side's row is its median round (by tokens/s)."""
    sides: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(rounds):
        for constrained in (False, True):
            sides[constrained].append(decode_run(llm, prompt, concurrency, max_tokens, constrained))
    free, constrained = (_median_row(sides[c]) for c in (False, True))
    constrained["slowdown_pct"] = 100 * (1 - constrained["tokens_per_s"] / free["tokens_per_s"])
    for row in (free, constrained):
        row["rounds_tokens_per_s"] = [r["tokens_per_s"] for r in sides[row["constrained"]]]
    return [free, constrained]


def _median_row(rows: list[dict]) -> dict:
    return sorted(rows, key=lambda r: r["tokens_per_s"])[len(rows) // 2]


def model_rows(
    model: str, levels: list[int], max_tokens: int, rounds: int, fast_forward: bool
) -> tuple[list[dict], LLM]:
    llm = LLM(model, max_model_len=1024, max_num_seqs=max(levels), grammar_fast_forward=fast_forward)
    prompt = llm.engine.encode_prompt(llm.engine.apply_chat_template([{"role": "user", "content": PROMPT}]))
    rows = []
    for concurrency in levels:
        rows += [r | {"model": model} for r in interleaved(llm, prompt, concurrency, max_tokens, rounds)]
    return rows, llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3, help="free/constrained runs in turn per level")
    parser.add_argument("--repeats", type=int, default=20, help="compiles timed per grammar")
    parser.add_argument("--peer", choices=["llamacpp"], help="the same requests to a peer server too")
    parser.add_argument(
        "--fast-forward",
        choices=["off", "on"],
        default="off",
        help="off (default) measures what masking costs per token; on adds the forced tokens the "
        "schema gives for free (the array's commas), so constrained decoding then outruns free",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "structured.json"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows, compiles = [], []
    for model in args.models.split(","):
        model_decode, llm = model_rows(model, levels, args.max_tokens, args.rounds, args.fast_forward == "on")
        rows += model_decode
        compiles += [c | {"model": model} for c in compile_times(llm, args.repeats)]
        del llm
        if args.peer == "llamacpp" and model == "smollm2-135m-instruct":  # the peer's GGUF (make_ggufs.py)
            from benchmarks.structured_llamacpp import llamacpp_rows

            peer = llamacpp_rows(model, PROMPT, LONG, levels, args.max_tokens)
            rows += [r | {"model": model} for r in peer]
    print_table(
        rows,
        ["model", "system", "concurrency", "constrained", "tokens_per_s", "slowdown_pct", "fill_step_p50_ms",
         "fill_step_p99_ms", "fill_row_p50_ms", "fill_row_p99_ms", "apply_step_p99_ms"],
    )  # fmt: skip
    print()
    print_table(compiles, ["model", "grammar", "cold_ms", "cached_ms"])
    write_json(
        args.out,
        {"models": args.models, "max_tokens": args.max_tokens, "rounds": args.rounds, "peer": args.peer,
         "fast_forward": args.fast_forward, "decode": rows, "compile": compiles},
    )  # fmt: skip


if __name__ == "__main__":
    main()
