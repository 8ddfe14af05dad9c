"""Load time to usable weights: swiftserve's snapshots against the path before them and the peers.

For each model (SmolLM2-135M chat, all-MiniLM-L6-v2 embeddings, and with --big a
Llama-3.2-1B-shaped chat model with random bf16 weights, ~2.5 GB), each way of loading runs in a
fresh subprocess, warm (the file read once, checked fully in the page cache with mincore) and
cold (evicted with POSIX_FADV_DONTNEED, checked), best of --repeats:
  before         swiftserve's load from the model's folder (build, cast, fuse and copy)
  snapshot       swiftserve from its .swsnap (the default: parameters are views of the mapping)
  snapshot-read  the snapshot's tensors read into fresh memory (the chunked reader)
  safetensors    safetensors.torch.load_file of the model's own file
  transformers   from_pretrained of the folder (where transformers is installed)
  fastsafetensors, tensorizer, serverless-llm-store: the peers, each from the venv that
                 benchmarks/peers_venv.sh makes (--peers-python), on the model's safetensors
                 file or the file they convert it to (peer_loaders.py); or why one does not run
Every way ends by touching one byte of every page of every tensor, so a lazy mapping pays for
its page faults as the first forward would. Physical limits in the same run: memory copy (warm)
and, per model, an O_DIRECT read of its snapshot file (cold). The 1B-shaped model's random
weights are also written as a Hugging Face folder, so it has every row the real models have.

End to end (--server-rounds): `swiftserve launch` with SmolLM2 on demand (idle timeout 1 s) and
MiniLM pinned; each round waits until the chat model is cold, then times one streamed request
(max_tokens 1) to its first token, then the same request again with the model resident; with
automatic snapshots (the default), with --no-snapshots (the load from the folder), and with a
host tier (--host-memory: the idle model is parked in host memory instead of unloaded).

    python benchmarks/cold_start.py [--big] [--repeats 3] [--server-rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import print_table, write_json
from benchmarks.page_cache import TIMED_LOAD, best_of

MODELS = {"smollm2-135m-instruct": "chat", "all-minilm-l6-v2": "embedding"}
BIG = "llama-3.2-1b-dummy"
BIG_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
LOGS = Path(tempfile.gettempdir())
PEERS_VENV = Path("/tmp/peers-venv/bin/python")  # benchmarks/peers_venv.sh's default
PEER_NAMES = ("fastsafetensors", "tensorizer", "serverless-llm-store")

# One way of loading, in a fresh interpreter: prints the seconds to usable weights.
WORKER = r"""
import json, sys, time
import torch

from pathlib import Path

way, kind, path = sys.argv[1], sys.argv[2], Path(sys.argv[3])


def loader():
    # The way's load as a function, its modules imported first: imports are not load time.
    if way in ("before", "snapshot") and kind == "chat":
        from swiftserve.loader.model_source import resolve_source
        from swiftserve.model_runner.model_loader import load_model

        # Resolving the source (config.json or the snapshot's index) is part of the load.
        return lambda: load_model(resolve_source(path), torch.bfloat16, torch.device("cpu")).parameters()
    if way == "before":
        from swiftserve.loader import iter_weights, load_config
        from swiftserve.models.bert import load_bert_encoder

        cfg = load_config(path)
        return lambda: load_bert_encoder(path, cfg, iter_weights(path)).parameters()
    if way == "snapshot":
        import swiftserve.loader.snapshot_errors  # noqa: F401 - imported lazily by the load
        import swiftserve.loader.snapshot_modules  # noqa: F401
        from swiftserve.models.bert import load_bert_snapshot

        return lambda: load_bert_snapshot(path).parameters()
    if way == "snapshot-read":
        from swiftserve.loader.snapshot_reader import load_snapshot

        return lambda: load_snapshot(path, method="read", verify=False).tensors.values()
    if way == "safetensors":
        from safetensors.torch import load_file

        return lambda: load_file(path).values()
    if way == "transformers":
        import transformers

        cls = transformers.AutoModelForCausalLM if kind == "chat" else transformers.AutoModel
        dtype = torch.bfloat16 if kind == "chat" else torch.float32
        return lambda: cls.from_pretrained(path, dtype=dtype).parameters()
    raise SystemExit(f"unknown way {way}")

"""


def run_way(way: str, kind: str, path: Path, files: list[Path], cold: bool, repeats: int) -> float:
    """Best of `repeats` fresh subprocesses, each after evicting (cold) or warming `files`."""

    def once() -> float:
        out = subprocess.run(
            [sys.executable, "-c", WORKER + TIMED_LOAD, way, kind, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"{way} on {path} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]

    return best_of(once, files, cold, repeats)


def prepare(work: Path, big: bool) -> dict[str, dict]:
    """Per model: its kind, folder, snapshot file and the file safetensors loads."""
    from swiftserve.engine.snapshot_export import export_snapshot
    from swiftserve.loader import resolve_model

    models = {}
    for name, kind in MODELS.items():
        folder = resolve_model(name, progress=False)
        snapshot = export_snapshot(name, work / f"{name}.swsnap")
        verify_once(snapshot)
        models[name] = {
            "kind": kind,
            "folder": folder,
            "snapshot": snapshot,
            "st": folder / "model.safetensors",
        }
    if big:
        models[BIG] = prepare_big(work, models["smollm2-135m-instruct"]["folder"])
    return models


def prepare_big(
    work: Path, tokenizer_folder: Path, hf_weights: bool = True, config: dict = BIG_CONFIG, name: str = BIG
) -> dict:
    """The 1B-shaped model: random bf16 weights, snapshotted, and a Hugging Face folder of the same
    weights (config, tokenizer, model.safetensors in HF names and layout), so that every way that
    loads a folder (before, safetensors, transformers, the peers) has what a user would have.
    hf_weights=False leaves model.safetensors out (a server needs only the snapshot); config and
    name give another Llama shape (the compound benchmark's CI run uses a tiny one)."""
    import torch
    from safetensors.torch import save_file

    from swiftserve.loader.model_source import ModelSource
    from swiftserve.loader.snapshot_cache import folder_meta
    from swiftserve.loader.snapshot_format import SourceKey
    from swiftserve.loader.snapshot_modules import snapshot_tensors
    from swiftserve.loader.snapshot_writer import write_snapshot
    from swiftserve.model_runner.model_loader import load_model

    folder = work / name
    folder.mkdir()
    for f in tokenizer_folder.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.suffix == ".jinja":
            shutil.copy(f, folder / f.name)
    (folder / "config.json").write_text(json.dumps(config))
    source = ModelSource(name, folder, "chat", config)
    model = load_model(source, torch.bfloat16, torch.device("cpu"), load_format="dummy")
    tensors, buffers = snapshot_tensors(model)
    snapshot = work / f"{name}.swsnap"
    write_snapshot(snapshot, tensors, folder_meta(folder, "chat", SourceKey(name, "bfloat16")), buffers)
    verify_once(snapshot)
    if hf_weights:
        save_file(hf_layout(model.state_dict(), config), folder / "model.safetensors")
    return {"kind": "chat", "folder": folder, "snapshot": snapshot, "st": folder / "model.safetensors"}


def hf_layout(state: dict, config: dict) -> dict:
    """swiftserve's fused runtime tensors under Hugging Face Llama names, split back (the tied
    lm_head left out, as HF checkpoints with tie_word_embeddings do)."""
    heads, kv_heads, head_dim = (
        config[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")
    )
    splits = {
        "qkv_proj": (
            ("q_proj", "k_proj", "v_proj"),
            (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim),
        ),
        "gate_up_proj": (("gate_proj", "up_proj"), (config["intermediate_size"],) * 2),
    }
    out = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue
        fused = name.split(".")[-2]
        if fused not in splits:
            out[f"model.{name}"] = tensor.contiguous()
            continue
        parts, sizes = splits[fused]
        for part, piece in zip(parts, tensor.split(sizes), strict=True):
            out[f"model.{name.replace(fused, part)}"] = piece.contiguous()
    return out


def verify_once(snapshot: Path) -> None:
    """Checksums are verified on a file's first use: do it here, so no timed load pays for it."""
    from swiftserve.loader.snapshot_reader import load_snapshot

    load_snapshot(snapshot, verify=True)


def memory_copy_gbps() -> float:
    """Memory copy bandwidth (1 GiB, warm): the ceiling of a warm load that copies."""
    import torch

    src = torch.ones(1 << 30, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start = time.perf_counter()
    dst.copy_(src)
    return src.numel() / (time.perf_counter() - start) / 1e9


def odirect_gbps(path: Path, repeats: int) -> float | None:
    """Raw O_DIRECT read bandwidth of the file, evicted first (best of repeats): what the disk
    gives without the page cache, the reference for cold loads."""
    from swiftserve.loader.chunk_read import Chunk, aligned_empty, read_into, supports_direct

    if not supports_direct(path):
        return None
    size = path.stat().st_size
    buffer = aligned_empty(size)

    def once() -> float:
        start = time.perf_counter()
        read_into(path, [Chunk(0, size, buffer)], direct=True)
        return time.perf_counter() - start

    return size / best_of(once, [path], True, repeats) / 1e9


def server_cold_start(rounds: int) -> dict:
    """Time to first token of a request that finds its model cold, and of the next one."""
    import httpx

    from benchmarks.multi_model import Server

    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "stream": True}
    out = {}
    variants = (
        ("snapshots", [], "cold"),
        ("no snapshots", ["--no-snapshots"], "cold"),
        ("host tier", ["--host-memory", "1GiB"], "parked"),  # unloaded to host memory, not to disk
    )
    for label, extra, idle_state in variants:
        args = ["--models", "emb=all-minilm-l6-v2", "--on-demand", "chat=smollm2-135m-instruct"]
        server = Server(
            label, [*args, "--idle-timeout", "1s", "--max-model-len", "512", *extra], "0,1", 2, LOGS
        )
        try:
            server.wait_ready()
            _ttft(server, body, httpx)  # loaded once, so that going idle can park it (host tier)
            cold, warm = [], []
            for _ in range(rounds):
                _wait_state(server, httpx, idle_state)
                cold.append(_ttft(server, body, httpx))
                warm.append(_ttft(server, body, httpx))
            out[label] = {"cold_ttft_s": cold, "resident_ttft_s": warm}
        finally:
            server.stop()
    return out


def _wait_state(server, httpx, state: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = httpx.get(server.base + "/v1/models", timeout=5).json()["data"]
        if next(m["state"] for m in models if m["id"] == "chat") == state:
            return
        time.sleep(0.1)
    raise SystemExit(f"the on-demand model never became {state}")


def _ttft(server, body: dict, httpx) -> float:
    start = time.perf_counter()
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60) as reply:
        for line in reply.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                return time.perf_counter() - start
    raise SystemExit("no token came back")


def run_peers(model: dict, work: Path, python: str | None, repeats: int, rows: list, name: str) -> dict:
    """Each peer loader on the model's safetensors file, from its own venv (peer_loaders.py):
    warm and cold seconds, or why it does not run here."""
    if python is None:
        return dict.fromkeys(PEER_NAMES, "not run: no peers venv (run benchmarks/peers_venv.sh)")
    from benchmarks.peer_loaders import load_seconds, prepare_peer_files

    out: dict[str, dict | str] = {}
    for peer in PEER_NAMES:
        files = prepare_peer_files(peer, model["st"], work / f"{name}-{peer}", python)
        if isinstance(files, str):
            out[peer] = files
            print(f"{name} {peer}: {files}", flush=True)
            continue
        timing = {
            c: best_of(functools.partial(load_seconds, peer, files, python), files, c == "cold", repeats)
            for c in ("warm", "cold")
        }
        out[peer] = timing
        rows.append({"model": name, "way": peer, "warm_s": timing["warm"], "cold_s": timing["cold"]})
        print(f"{name} {peer}: warm {timing['warm']:.3f} s, cold {timing['cold']:.3f} s", flush=True)
    return out


def ways_for(model: dict) -> list[tuple[str, Path | None, list[Path]]]:
    """(way, what the worker loads, the files whose page-cache state the run sets)."""
    folder, snapshot, st = model["folder"], model["snapshot"], model["st"]
    sources = sorted(folder.glob("*.safetensors"))
    ways = [
        ("before", folder, sources),
        ("snapshot", snapshot, [snapshot]),
        ("snapshot-read", snapshot, [snapshot]),
        ("safetensors", st, [st]),
    ]
    if importlib.util.find_spec("transformers") is not None:
        ways.append(("transformers", folder, sources))
    return ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", action="store_true", help="also the ~2.5 GB Llama-3.2-1B-shaped model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the files go (default: a temp dir on disk)")
    parser.add_argument("--server-rounds", type=int, default=5, help="end-to-end rounds (0: skip)")
    parser.add_argument("--server-only", action="store_true", help="only the end-to-end part")
    parser.add_argument(
        "--peers-python",
        default=str(PEERS_VENV) if PEERS_VENV.exists() else None,
        help="interpreter of the venv with the peer loaders (benchmarks/peers_venv.sh)",
    )
    parser.add_argument("--out", default="benchmarks/results/cold_start.json")
    args = parser.parse_args()
    if args.server_only:
        server = server_cold_start(args.server_rounds)
        report_server(server)
        write_json(args.out, {"args": vars(args), "server": server})
        return
    work = Path(tempfile.mkdtemp(prefix="cold_start_", dir=args.workdir))
    try:
        models = prepare(work, args.big)
        rows, results = [], {}
        for name, model in models.items():
            results[name] = {}
            for way, path, files in ways_for(model):
                timing = {
                    c: run_way(way, model["kind"], path, files, c == "cold", args.repeats)
                    for c in ("warm", "cold")
                }
                results[name][way] = timing
                rows.append({"model": name, "way": way, "warm_s": timing["warm"], "cold_s": timing["cold"]})
                print(f"{name} {way}: warm {timing['warm']:.3f} s, cold {timing['cold']:.3f} s", flush=True)
            results[name].update(run_peers(model, work, args.peers_python, args.repeats, rows, name))
            results[name]["odirect_read_GBps"] = odirect_gbps(model["snapshot"], args.repeats)
        limits = {"memory_copy_GBps": memory_copy_gbps()}
        summarize(results, models, rows)
        server = server_cold_start(args.server_rounds) if args.server_rounds else {}
        report_server(server)
        print_table(rows, ["model", "way", "warm_s", "cold_s"])
        print(json.dumps(limits))
        payload = {"args": vars(args), "results": results, "limits": limits, "rows": rows, "server": server}
        write_json(args.out, payload)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(results: dict, models: dict, rows: list[dict]) -> None:
    """Ratios a reader wants, per model: the path before over the snapshot (>= 6x asked), the
    snapshot over safetensors' zero-copy mmap (<= 1.1 asked warm) and over each peer, and the
    cold snapshot load's bandwidth as a share of the raw O_DIRECT read of the same file."""
    for name, ways in results.items():
        snap = ways.get("snapshot")
        if not isinstance(snap, dict):
            continue
        for other in ("before", "safetensors", "transformers", *PEER_NAMES):
            if isinstance(ways.get(other), dict):
                rows.append({"model": name, "way": f"{other} / snapshot", **_ratio(ways[other], snap)})
        raw = ways.get("odirect_read_GBps")
        if raw:
            size = models[name]["snapshot"].stat().st_size
            ways["snapshot_cold_GBps"] = size / snap["cold"] / 1e9
            ways["snapshot_cold_share_of_odirect"] = ways["snapshot_cold_GBps"] / raw
            rows.append(
                {
                    "model": name,
                    "way": "snapshot cold GB/s : O_DIRECT GB/s",
                    "warm_s": None,
                    "cold_s": ways["snapshot_cold_share_of_odirect"],
                }
            )


def report_server(server: dict) -> None:
    for label, times in server.items():
        cold, resident = _ms(times["cold_ttft_s"]), _ms(times["resident_ttft_s"])
        print(f"server, {label}: cold TTFT {cold}, resident {resident}")


def _ms(seconds: list[float]) -> str:
    return (
        "median "
        + f"{1e3 * sorted(seconds)[len(seconds) // 2]:.0f} ms "
        + str([round(1e3 * x) for x in seconds])
    )


def _ratio(a: dict, b: dict) -> dict:
    return {"warm_s": a["warm"] / b["warm"], "cold_s": a["cold"] / b["cold"]}


if __name__ == "__main__":
    main()
