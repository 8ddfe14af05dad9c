"""The pipelines every system runs, rag3, rag4 and rag5: retrieve the nearest passages of the
corpus (embed), a fan-out of 3-5 drafts on smol, the merge by big; their prompts, and the fixed
length of every call of the trace.

Both systems render the same templates: swiftserve's stages from its config (pipeline_entries),
the static deployment's orchestrator from DRAFT and MERGE here, so both run the same model calls.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus.jsonl"
FAN_OUTS = (3, 4, 5)
# Outputs are short and fixed (ignore_eos) so that a request's work does not depend on the model's
# random weights: the trace is the same work for every system.
DRAFT_TOKENS, MERGE_TOKENS, CHAT_TOKENS = 8, 8, 12
TOP_K = 2
DRAFT = "Facts: {{ stages.context }}\nQuestion: {{ input }}\nDraft {{ i }}:"
# The merge is a completion: the 1B-shaped model stands for a base model, and its prefill is the
# costliest part of a request here (~30 prompt tokens/s on 2 cores), so its prompt is kept lean.
MERGE = "Drafts:\n{{ stages.drafts }}\nQuestion: {{ input }}\nOne answer:"
GREEDY = {"temperature": 0.0, "ignore_eos": True}


def pipeline_entries(corpus: Path) -> list[dict]:
    """rag3, rag4, rag5: retrieve, a fan-out of 3-5 drafts on smol, the merge by big."""
    entries = []
    for n in FAN_OUTS:
        stages = [
            {"id": "context", "kind": "retrieve", "model": "embed", "corpus": str(corpus), "top_k": TOP_K},
            {"id": "drafts", "kind": "chat", "model": "smol", "after": ["context"], "fan_out": n,
             "max_tokens": DRAFT_TOKENS, "sampling": GREEDY,
             "messages": [{"role": "user", "content": DRAFT}]},
            {"id": "final", "kind": "completion", "model": "big", "after": ["drafts"],
             "max_tokens": MERGE_TOKENS, "sampling": GREEDY, "prompt": MERGE},
        ]  # fmt: skip
        entries.append({"name": f"rag{n}", "stages": stages})
    return entries
