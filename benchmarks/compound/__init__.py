"""The compound-AI benchmark: a static deployment against swiftserve, on one seeded trace.

Four models, as in the study swiftserve follows: all-MiniLM-L6-v2 (`embed`), SmolLM2-135M
(`smol`) and Gemma 3 270M (`gemma`), and a Llama-3.2-1B-shaped model with random bf16 weights
(`big`, a snapshot written once into --workdir; fixed-length outputs with ignore_eos).

The trace (seeded; every system gets the same one), four classes, each with its own pattern:
  pipeline  retrieve the 2 nearest passages of a 48-line corpus (embed), a fan-out of 3-5 drafts
            on smol, a merge by big: bursts with quiet gaps longer than the idle timeout
  smol      direct chat, steady (the heavy steady traffic; pinned in swiftserve)
  gemma     direct chat, bursts with quiet gaps, out of phase with the pipelines
  embed     direct embeddings, steady
Arrivals are Poisson at a rate that follows each class's pattern through five phases: bursts,
a steady stretch (the pre-spike reference), a 10x step of every class's rate, bursts again.

Systems, one after another, each started here on 127.0.0.1 and stopped after its run:
  static             one `swiftserve launch` per model, always loaded, cores split with taskset and
                     OMP_NUM_THREADS (big alone on half the cores, the three small models sharing the
                     rest), a fixed memory budget each; no scale to zero, no pre-warming; the pipeline
                     run by an orchestrator here that calls the stages one by one (embed, top-k cosine
                     over the corpus vectors, the drafts concurrently, the merge)
  llamacpp           static's deployment built from llama.cpp: one llama-cpp-python server per model
                     on static's cores, the same orchestrator (benchmarks/compound/llamacpp.py; needs
                     `pip install 'llama-cpp-python[server]'` and benchmarks/compound/make_ggufs.py's
                     GGUFs, else skipped, saying why)
  swiftserve         one process, every core; embed and smol pinned, gemma and big on demand (short
                     idle timeout), snapshots, the pipelines declared in its config (pre-warming)
  swiftserve-noprewarm   the same with `prewarm: false`
  swiftserve-pinned      the same with every model pinned (no scale to zero)

Per system: P50/P95/P99 end-to-end latency of pipeline requests and of direct calls, completed
requests/s and goodput (requests within their class's SLO), errors and 429s, cost (resident memory
GB-seconds: RSS, and PSS, of every process of the system, sampled every 0.5 s; reserved
core-seconds), cold-start waits (the pipeline response's per-stage `cold_wait_s`, /metrics), and
P95 per 10-second window. The table, the targets against static, JSON in --out and two figures
(latency through the spike, latency CDFs) under --figures.

    python -m benchmarks.compound            # ~20 minutes: five systems of a 180 s trace
    python -m benchmarks.compound --quick    # ~8 minutes: a 90 s trace
    python -m benchmarks.compound --ci       # ~2 minutes: a 6 s trace, a tiny merge model, static, swiftserve

From the repository root, where `python -m` finds `benchmarks` (so not with -P or PYTHONSAFEPATH=1,
which leave the root off sys.path). `python -m` puts the root first on sys.path, where its kernels/
would shadow the installed `kernels` that transformers imports: __main__.py moves the root last, and
the servers run with PYTHONSAFEPATH=1 (server_proc.py).
"""

# What other code imports from the package; the parts themselves import from the modules that
# hold each name (never from here, which would make a cycle of this file's imports).
from benchmarks.compound.model_sources import prepare_models
from benchmarks.compound.server_proc import Proc
from benchmarks.compound.systems import Setup, System, static_cpus
from benchmarks.compound.workload import DIRECT, Shape

__all__ = ["DIRECT", "Proc", "Setup", "Shape", "System", "prepare_models", "static_cpus"]
