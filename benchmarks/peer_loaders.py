"""The peer fast loaders a user could pick instead of swiftserve's snapshots, timed like cold_start.py's ways.

The peers live in a venv of their own (benchmarks/peers_venv.sh, default /tmp/peers-venv), never in
the project's environment, and each runs in a fresh subprocess of that venv's interpreter:

    prepare_peer_files(peer, model.safetensors, workdir, python) -> files | why it does not run here
    load_seconds(peer, files, python) -> seconds to every tensor in CPU memory, one byte per page touched

  fastsafetensors       SafeTensorsFileLoader on the model's own file, CPU device, nogds=True (pread
                        into its buffers, no GPUDirect Storage; O_DIRECT on a local disk by default, so
                        warm is no faster than cold: FASTSAFETENSORS_ODIRECT=0 reads through the cache)
  tensorizer            TensorDeserializer of a .tensors file written by TensorSerializer, device cpu,
                        eager (lazy_load=False; plaid_mode is a no-op in tensorizer >= 2.10)
  serverless-llm-store  sllm_store.torch.load_dict of its save_dict folder, through an `sllm-store start`
                        server with a small memory pool, started and stopped around each load; it loads
                        onto GPU 0 (it has no CPU target), so without CUDA prepare says why instead

Imports are not load time; converting to a peer's format (prepare) is untimed. By hand, best of
--repeats, warm (files read once, checked resident) and cold (evicted, checked):

    python benchmarks/peer_loaders.py MODEL.safetensors [--python /tmp/peers-venv/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.page_cache import TIMED_LOAD, best_of

PEERS: tuple[str, ...] = ("fastsafetensors", "tensorizer", "serverless-llm-store")
MODULES = {
    "fastsafetensors": "fastsafetensors",
    "tensorizer": "tensorizer",
    "serverless-llm-store": "sllm_store",
}
DEFAULT_PYTHON = "/tmp/peers-venv/bin/python"
SLLM_PORT = 8073  # sllm_store.torch.load_dict always talks to 127.0.0.1:8073
SLLM_POOL = "1GB"
# What each peer's docs and build say about the CPU, added to a "not installed" reason.
KNOWN = {
    "serverless-llm-store": "and sllm_store loads onto GPUs only: its setup.py needs CUDA_HOME or ROCM_HOME, "
    "its CMake stops with 'Neither CUDA nor HIP found', load_dict allocates CUDA memory and the server "
    "pins its pool with cudaHostRegister (ServerlessLLM issues #62, #114: no CPU support)",
}

# Untimed conversion, in the venv: prints {"files": [...]} or {"unavailable": why}.
PREPARE = r"""
import json, sys
from pathlib import Path

peer, module, source, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])


def done(**result):
    print(json.dumps(result))
    raise SystemExit(0)


try:
    __import__(module)
except Exception as e:
    done(unavailable=f"{type(e).__name__}: {e}")
if peer == "fastsafetensors":
    done(files=[str(source)])
from safetensors.torch import load_file

tensors = load_file(source)
if peer == "tensorizer":
    from tensorizer import TensorSerializer

    target = out / (source.stem + ".tensors")
    serializer = TensorSerializer(str(target))
    serializer.write_state_dict(tensors)
    serializer.close()
    done(files=[str(target)])
if peer == "serverless-llm-store":
    import torch
    from sllm_store.torch import save_dict

    if not torch.cuda.is_available():
        try:
            torch.cuda.init()
        except Exception as e:
            done(unavailable=f"CUDA only (load_dict allocates its tensors on the GPUs of device_map): {e}")
    target = out / "sllm" / source.stem
    save_dict(tensors, str(target))
    done(files=sorted(str(f) for f in target.iterdir() if f.name.startswith("tensor.data")))
raise SystemExit(f"unknown peer {peer}")
"""

# One timed load, in a fresh interpreter of the venv: prints {"seconds": ...}.
LOAD = r"""
import json, sys, time
import torch

from pathlib import Path

peer, files = sys.argv[1], [Path(f) for f in sys.argv[2:]]


def loader():
    # The peer's load as a function, its modules imported first: imports are not load time.
    if peer == "fastsafetensors":
        from fastsafetensors import SafeTensorsFileLoader

        def load():
            files_loader = SafeTensorsFileLoader(None, "cpu", nogds=True)
            files_loader.add_filenames({0: [str(f) for f in files]})
            buffers = files_loader.copy_files_to_device()
            return [buffers.get_tensor(k) for k in files_loader.get_keys()]

        return load
    if peer == "tensorizer":
        from tensorizer import TensorDeserializer

        def load():
            out = []
            for f in files:
                out.extend(TensorDeserializer(str(f), device="cpu", lazy_load=False).values())
            return out

        return load
    if peer == "serverless-llm-store":
        from sllm_store.torch import load_dict

        folder = files[0].parent
        return lambda: load_dict(folder.name, {"": 0}, str(folder.parent)).values()
    raise SystemExit(f"unknown peer {peer}")

"""


def prepare_peer_files(peer: str, safetensors_file: Path, workdir: Path, python: str) -> list[Path] | str:
    """Converts the model's safetensors file into what `peer` loads (untimed), in `python`'s venv.

    Returns the files whose page-cache state a timed load depends on, or why the peer does not run
    here ("not installed in VENV: ...", "CUDA only: ...")."""
    if peer not in MODULES:
        raise ValueError(f"unknown peer {peer!r}; one of {', '.join(PEERS)}")
    venv = _venv(python)
    if not Path(python).exists():
        return f"not installed in {venv}: no interpreter at {python} (run benchmarks/peers_venv.sh)"
    workdir.mkdir(parents=True, exist_ok=True)
    script = [python, "-c", PREPARE, peer, MODULES[peer], str(safetensors_file), str(workdir)]
    out = subprocess.run(script, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{peer}: converting {safetensors_file} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "files" in result:
        return [Path(f) for f in result["files"]]
    reason = result["unavailable"]
    if reason.startswith(("ModuleNotFoundError", "ImportError")):
        install = _install_failure(venv, peer)
        known = f"; {KNOWN[peer]}" if peer in KNOWN else ""
        return f"not installed in {venv}: {reason}" + (f"; pip: {install}" if install else "") + known
    return reason


def load_seconds(peer: str, files: list[Path], python: str) -> float:
    """One fresh subprocess of `python`: seconds to load every tensor of `files` into memory as torch
    tensors and touch one byte per page of each (imports not timed)."""
    server = _sllm_store_server(python, files[0].parent.parent) if peer == "serverless-llm-store" else None
    with server or contextlib.nullcontext():
        out = subprocess.run(
            [python, "-c", LOAD + TIMED_LOAD, peer, *map(str, files)],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"{peer} on {files[0]} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


@contextlib.contextmanager
def _sllm_store_server(python: str, storage: Path, timeout: float = 120.0) -> Iterator[None]:
    """`sllm-store start` on `storage` with a small pinned pool, until the block ends; a fresh one per
    load, so no load finds the model already in its memory pool."""
    command = [str(Path(python).parent / "sllm-store"), "start", "--host", "127.0.0.1"]
    command += ["--port", str(SLLM_PORT), "--storage-path", str(storage), "--mem-pool-size", SLLM_POOL]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not _listening(SLLM_PORT):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"sllm-store start did not come up:\n{log.read()[-3000:]}")
                time.sleep(0.2)
            yield
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _venv(python: str) -> Path:
    return Path(python).parent.parent


def _install_failure(venv: Path, peer: str) -> str:
    """The line of peers_venv.sh's pip log for `peer` that says why it did not install, if any."""
    log = venv / "install-logs" / f"{peer}.log"
    if not log.exists():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    for marker in (" depends on ", "RuntimeError: ", "Error: ", "ERROR: "):
        found = [line for line in lines if marker in line and "requested" not in line]
        if found:
            return found[-1]
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("safetensors", type=Path, help="the model's .safetensors file")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="the peers' venv interpreter")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, of: " + ", ".join(PEERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where converted files go (default: a temp dir)")
    args = parser.parse_args()
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory(prefix="peer_loaders_", dir=args.workdir) as work:
        for peer in args.peers.split(","):
            files = prepare_peer_files(peer, args.safetensors, Path(work) / peer, args.python)
            if isinstance(files, str):
                results[peer] = files
                print(f"{peer}: {files}", flush=True)
                continue
            timing = {
                c: best_of(
                    functools.partial(load_seconds, peer, files, args.python),
                    files,
                    c == "cold",
                    args.repeats,
                )
                for c in ("warm", "cold")
            }
            results[peer] = timing
            size = sum(os.path.getsize(f) for f in files)
            print(
                f"{peer}: warm {timing['warm']:.3f} s, cold {timing['cold']:.3f} s ({size / 1e6:.0f} MB)",
                flush=True,
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
