"""GGUFs of the compound benchmark's four models, for its llama.cpp peer (llamacpp.py here).

Each model in the dtype swiftserve serves it ("auto": bfloat16 for chat models, float32 for the
embedder), converted by llama.cpp's own convert_hf_to_gguf.py from the weights swiftserve serves:
  embed, smol, gemma  the Hugging Face folders of the aliases (~/.cache/swiftserve/models); smol's
                      and gemma's were dequantized by swiftserve from the aliases' GGUFs (Q4_1,
                      Q4_K_M) into bf16, so the bf16 GGUFs hold exactly the values swiftserve serves
  big                 the random weights of the benchmark's snapshot (the same values, not just the
                      same shapes), written back in Hugging Face layout into a temporary folder
The files go into ~/.cache/swiftserve/gguf (not in git); one already there is kept (--force
remakes it). The converter comes from llama.cpp's source: --llama-cpp, else the sdist of the
installed llama-cpp-python (pip download), whose vendor/llama.cpp holds it.

    python benchmarks/compound/make_ggufs.py          # the four models of the full trace
    python benchmarks/compound/make_ggufs.py --ci     # and the tiny merge model of --ci
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # appended: kernels/ must not shadow `kernels`
from benchmarks.compound.model_sources import prepare_models  # noqa: E402

GGUF_DIR = Path.home() / ".cache" / "swiftserve" / "gguf"
# convert_hf_to_gguf's --outtype for each served model: swiftserve's "auto" dtype of its kind
OUTTYPES = {"embed": "f32", "smol": "bf16", "gemma": "bf16", "big": "bf16"}


def source_name(served: str, source: str) -> str:
    """The model's own name: the alias, or the snapshot's stem for big (a path)."""
    return Path(source).stem if source.endswith(".swsnap") else source


def gguf_path(served: str, source: str, gguf_dir: Path = GGUF_DIR) -> Path:
    return gguf_dir / f"{source_name(served, source)}-{OUTTYPES[served]}.gguf"


def hf_folder(served: str, source: str, work: Path) -> Path:
    """A Hugging Face folder of the model's served weights (big's written into `work`)."""
    from swiftserve.loader import resolve_model

    if not source.endswith(".swsnap"):
        return resolve_model(source, progress=False)
    return snapshot_as_hf(Path(source), work / source_name(served, source))


def snapshot_as_hf(snapshot: Path, out: Path) -> Path:
    """The snapshot's parameters (buffers left out) under Hugging Face Llama names, beside the
    config and tokenizer that model_sources.prepare_models wrote next to it."""
    from safetensors.torch import save_file

    from benchmarks.cold_start import hf_layout
    from swiftserve.loader.snapshot_reader import load_snapshot

    shutil.copytree(snapshot.with_suffix(""), out)
    snap = load_snapshot(snapshot)
    params = {e.name: snap.tensors[e.name] for e in snap.header.tensors if not e.is_buffer}
    config = json.loads((out / "config.json").read_text())
    save_file(hf_layout(params, config), out / "model.safetensors")
    return out


def convert(converter: Path, folder: Path, outtype: str, target: Path) -> None:
    """convert_hf_to_gguf.py into a temporary name, then renamed: no half-written GGUF is ever kept."""
    partial = target.with_suffix(".partial")
    cmd = [sys.executable, str(converter), str(folder), "--outtype", outtype, "--outfile", str(partial)]
    # the converter imports its sibling `conversion` package from its own folder: PYTHONSAFEPATH
    # (which the tests set) would hide it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"} | {"HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env)
    os.replace(partial, target)


def llama_cpp_source(work: Path) -> Path:
    """vendor/llama.cpp of the installed llama-cpp-python's sdist (the latest one if none is installed)."""
    try:
        spec = "llama-cpp-python==" + importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        spec = "llama-cpp-python"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "download",
        spec,
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(work),
    ]
    subprocess.run(pip, check=True)
    sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    return next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))


def make(sources: list[tuple[str, str]], src: Path | None, force: bool, gguf_dir: Path) -> list[Path]:
    """Each (served name, source)'s GGUF, unless it exists; the files made."""
    gguf_dir.mkdir(parents=True, exist_ok=True)
    made = []
    with tempfile.TemporaryDirectory(dir=gguf_dir) as tmp:
        work = Path(tmp)
        for served, source in sources:
            target = gguf_path(served, source, gguf_dir)
            if target.exists() and not force:
                print(f"{target} exists (--force remakes it)")
                continue
            src = src or llama_cpp_source(work)
            print(f"{served}: {source} -> {target} ({OUTTYPES[served]})")
            convert(src / "convert_hf_to_gguf.py", hf_folder(served, source, work), OUTTYPES[served], target)
            made.append(target)
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ci", action="store_true", help="also the tiny merge model of `python -m benchmarks.compound --ci`"
    )
    parser.add_argument("--llama-cpp", type=Path, help="a llama.cpp source tree (convert_hf_to_gguf.py)")
    parser.add_argument("--force", action="store_true", help="remake files that exist")
    parser.add_argument("--workdir", default=str(Path.home() / ".cache" / "swiftserve" / "bench-compound"))
    parser.add_argument("--out", type=Path, default=GGUF_DIR)
    args = parser.parse_args(argv)
    sources = list(prepare_models(argparse.Namespace(ci=False), Path(args.workdir)).items())
    if args.ci:
        sources.append(("big", prepare_models(argparse.Namespace(ci=True), Path(args.workdir))["big"]))
    for path in make(sources, args.llama_cpp, args.force, args.out):
        print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
