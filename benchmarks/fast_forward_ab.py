"""Does grammar fast-forward pay? A/B on one engine, interleaved rounds, on a JSON schema whose
keys are long (forced) and whose values are short (sampled).

Each round runs the same greedy requests with fast-forward off, then on (the order alternates
between rounds), so a noisy shared host hits both alike. Reported: wall time per round, engine
steps, output tokens, tokens fast-forwarded, and whether both arms wrote the same text.

    python benchmarks/fast_forward_ab.py [--concurrency 1 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import jsonschema

from swiftserve import LLM, SamplingParams
from swiftserve.structured_outputs import StructuredOutputs

KEYS = [
    "customer_full_legal_name",
    "customer_primary_billing_street_address",
    "customer_preferred_contact_phone_number",
    "order_total_amount_in_euro_cents",
    "order_has_been_shipped_to_customer",
]
SCHEMA = {
    "type": "object",
    "properties": {
        KEYS[0]: {"type": "string", "maxLength": 12},
        KEYS[1]: {"type": "string", "maxLength": 12},
        KEYS[2]: {"type": "string", "pattern": "^[0-9]{6}$"},
        KEYS[3]: {"type": "integer", "minimum": 0, "maximum": 99999},
        KEYS[4]: {"type": "boolean"},
    },
    "required": KEYS,
    "additionalProperties": False,
}


def run_arm(llm: LLM, prompts: list[str], fast_forward: bool) -> dict:
    engine = llm.engine
    engine.config = replace(engine.config, grammar_fast_forward=fast_forward)
    params = SamplingParams(temperature=0, max_tokens=200, structured_outputs=StructuredOutputs(json=SCHEMA))
    forced_before, steps = engine.num_forced_tokens, [0]
    step = engine.step

    def counted():
        steps[0] += 1
        return step()

    engine.step = counted  # type: ignore[method-assign]
    start = time.perf_counter()
    outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params)
    elapsed = time.perf_counter() - start
    del engine.step
    texts = [o.outputs[0].text for o in outs]
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    forced = engine.num_forced_tokens - forced_before
    return {"s": elapsed, "steps": steps[0], "tokens": tokens, "forced": forced, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    llm = LLM(args.model, max_model_len=1024, kv_cache_memory=128 << 20)
    for concurrency in args.concurrency:
        prompts = [f"Customer {i}: invent an order record as JSON." for i in range(concurrency)]
        run_arm(llm, prompts, True)  # warm: compile, kernels
        rows: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for ff in (False, True) if r % 2 == 0 else (True, False):
                rows[ff].append(run_arm(llm, prompts, ff))
        same = sum(a == b for a, b in zip(rows[False][0]["texts"], rows[True][0]["texts"], strict=True))
        print(f"concurrency {concurrency}, {args.rounds} rounds; same text in {same}/{concurrency} requests")
        for ff, arm in rows.items():
            times = [r["s"] for r in arm]
            print(
                f"  fast-forward {'on ' if ff else 'off'}: wall median {statistics.median(times):6.2f} s "
                f"(min {min(times):6.2f} max {max(times):6.2f}), steps {arm[0]['steps']}, "
                f"tokens {arm[0]['tokens']}, forced {arm[0]['forced']}"
            )
    llm.engine.close()


if __name__ == "__main__":
    main()
