"""The four models and where each is served from: three aliases, and the 1B-shaped merge model
(random bf16 weights) written once as a snapshot into the work folder (a tiny one for --ci)."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.cold_start import BIG, BIG_CONFIG, prepare_big

SMALL, SECOND, EMBEDDER = "smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"
# The 1B-shaped model's stand-in for --ci: the same architecture, a few MB of random weights.
TINY_CONFIG = {**BIG_CONFIG, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152}  # fmt: skip


def prepare_models(args, workdir: Path) -> dict[str, str]:
    """{served name: source}; `args.ci` picks the tiny merge model."""
    from swiftserve.loader import resolve_model

    name, config = ("tiny-llama-dummy", TINY_CONFIG) if args.ci else (BIG, BIG_CONFIG)
    snapshot = workdir / f"{name}.swsnap"
    if not snapshot.exists():
        shutil.rmtree(workdir / name, ignore_errors=True)
        print(f"writing the {name} snapshot (random weights) into {workdir}")
        prepare_big(workdir, resolve_model(SMALL, progress=False), hf_weights=False, config=config, name=name)
    return {"embed": EMBEDDER, "smol": SMALL, "gemma": SECOND, "big": str(snapshot)}
