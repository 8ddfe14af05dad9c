"""Schema coverage: public JSON schemas with valid and invalid instances (the JSON Schema Test
Suite, draft 2020-12 with its format tests; MaskBench's real-world schemas from JSONSchemaBench),
compiled through swiftserve's own path and the instances forced through the matcher token by token
with our tokenizers (SmolLM2, 49k; Gemma 3, 262k). Per corpus and tokenizer: schemas compiled,
refused as unsupported (the keywords) or failing to compile; valid instances accepted, invalid
rejected; compile time p50/p99; why each valid instance that was rejected was rejected.

The corpora live outside git: benchmarks/schema_corpus.py says how to fetch them.

    python benchmarks/schema_coverage.py [--maskbench-per-group 60]
        [--models smollm2-135m-instruct,gemma-3-270m]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # appended: kernels/ must not shadow `kernels`
from benchmarks.common import print_table, write_json
from benchmarks.schema_corpus import DEFAULT_ROOT, CorpusSchema, load_maskbench, load_test_suite
from benchmarks.schema_forcing import Forcing
from swiftserve.engine.grammar_stats import percentile
from swiftserve.loader import load_tokenizer, resolve_model
from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend

EXAMPLES = 5  # failures kept per category in the JSON, to read


@dataclass
class Tally:
    """One corpus through one tokenizer."""

    compile_s: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    keywords: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)  # valid/invalid, right/wrong
    why: Counter = field(default_factory=Counter)  # why valid instances were rejected
    examples: dict[str, list[dict]] = field(default_factory=dict)
    retokenized: int = 0  # instances whose tokens differ from llguidance's own tokenization

    def example(self, category: str, entry: dict) -> None:
        kept = self.examples.setdefault(category, [])
        if len(kept) < EXAMPLES:
            kept.append(entry)


def run_corpus(forcing: Forcing, schemas: list[CorpusSchema]) -> Tally:
    tally = Tally()
    for schema in schemas:
        compiled = forcing.compile(schema.schema)
        tally.outcomes[compiled.outcome] += 1
        tally.keywords.update(compiled.keywords)
        if compiled.outcome == "error":
            tally.errors[compiled.message.split(":")[-1].strip()[:70]] += 1
            tally.example("compile error", {"schema": schema.id, "message": compiled.message[:300]})
        if compiled.grammar is None:
            continue
        tally.compile_s.append(compiled.seconds)
        for instance in schema.instances:
            check_instance(forcing, tally, schema, compiled.grammar, instance)
    return tally


def check_instance(forcing: Forcing, tally: Tally, schema: CorpusSchema, grammar, instance) -> None:
    token_ids = forcing.encode(instance.data)
    text = json.dumps(instance.data, ensure_ascii=False)
    tally.retokenized += list(forcing.backend.tokenizer.tokenize_str(text)) != token_ids
    accepted = forcing.accepts(grammar, token_ids)
    kind = "valid" if instance.valid else "invalid"
    right = accepted == instance.valid
    tally.counts[f"{kind} {'right' if right else 'wrong'}"] += 1
    if right:
        return
    category = (
        forcing.why_rejected(schema.schema, grammar, instance.data) if instance.valid else "not enforced"
    )
    tally.why[category] += 1
    tally.example(category, {"schema": schema.id, "note": instance.note[:160], "instance": text[:200]})


def summary(corpus: str, model: str, tally: Tally) -> dict:
    c, o = tally.counts, tally.outcomes
    valid, invalid = c["valid right"] + c["valid wrong"], c["invalid right"] + c["invalid wrong"]
    return {
        "corpus": corpus,
        "tokenizer": model,
        "schemas": sum(o.values()),
        "compiled": o["compiled"],
        "unsupported": o["unsupported"],
        "errors": o["error"],
        "valid": valid,
        "valid_accepted_pct": 100 * c["valid right"] / max(valid, 1),
        "invalid": invalid,
        "invalid_rejected_pct": 100 * c["invalid right"] / max(invalid, 1),
        "compile_p50_ms": 1e3 * percentile(tally.compile_s, 0.5),
        "compile_p99_ms": 1e3 * percentile(tally.compile_s, 0.99),
        "retokenized": tally.retokenized,
        "top_unsupported": dict(tally.keywords.most_common(8)),
        "top_errors": dict(tally.errors.most_common(5)),
        "failures": dict(tally.why),
        "examples": tally.examples,
    }


def forcing_for(model: str) -> Forcing:
    folder = resolve_model(model)
    tokenizer = load_tokenizer(folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    start = time.perf_counter()
    backend = LLGuidanceBackend(tokenizer.tokenizer, vocab, tokenizer.eos_token_ids)
    print(f"{model}: llguidance tokenizer built in {time.perf_counter() - start:.1f} s", flush=True)
    return Forcing(tokenizer, backend)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--maskbench-per-group", type=int, default=60, help="0: every schema")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "schema_coverage.json"))
    args = parser.parse_args()
    corpora = {
        "JSON-Schema-Test-Suite 2020-12": load_test_suite(args.corpus_root),
        "MaskBench": load_maskbench(args.corpus_root, args.maskbench_per_group or None),
    }
    rows = []
    for model in args.models.split(","):
        forcing = forcing_for(model)
        for corpus, schemas in corpora.items():
            start = time.perf_counter()
            rows.append(summary(corpus, model, run_corpus(forcing, schemas)))
            print(f"  {corpus}: {time.perf_counter() - start:.1f} s", flush=True)
    report(rows)
    write_json(args.out, {"maskbench_per_group": args.maskbench_per_group, "rows": rows})


def report(rows: list[dict]) -> None:
    print()
    print_table(
        rows,
        ["corpus", "tokenizer", "schemas", "compiled", "unsupported", "errors", "valid", "valid_accepted_pct",
         "invalid", "invalid_rejected_pct", "compile_p50_ms", "compile_p99_ms"],
    )  # fmt: skip
    for row in rows:
        print(f"\n{row['corpus']} / {row['tokenizer']}")
        print(f"  unsupported: {row['top_unsupported']}")
        print(f"  compile errors: {row['top_errors']}")
        print(
            f"  wrong instances by cause: {row['failures']}; retokenized by llguidance: {row['retokenized']}"
        )


if __name__ == "__main__":
    main()
