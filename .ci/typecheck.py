"""mypy over swiftserve's packages as they are installed (`make lint` runs this).

pyproject.toml's package-dir maps swiftserve.router onto router/, swiftserve.scheduler onto
scheduler/ and swiftserve.kernels onto kernels/. mypy finds modules by folder and cannot follow that
mapping: the editable install's import hook is code, which mypy does not run. So this script lays
the packages out as the install does, as symlinks under build/typecheck/swiftserve/, and runs mypy
from there. The repository root stays off mypy's search path: its kernels/ would shadow the
installed `kernels` package, as it would at run time.

The packages checked and the settings are pyproject.toml's [tool.mypy]; arguments are passed on
to mypy (say `-p swiftserve.engine` to check one package that is not in the list yet).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Package name -> its folder, as setuptools installs them (the top-level ones of "" included)."""
    mapping = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    packages = {name: ROOT / folder for name, folder in mapping.items() if name}
    if "" in mapping:
        for folder in (ROOT / mapping[""]).iterdir():
            if (folder / "__init__.py").is_file():
                packages.setdefault(folder.name, folder)
    return packages


def lay_out(tree: Path, packages: dict[str, Path]) -> None:
    """Each package as a folder of links to its files; a mapped subpackage gets its own folder."""
    if tree.exists():
        shutil.rmtree(tree)
    for name, folder in packages.items():
        target = tree / name.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for entry in folder.iterdir():
            if entry.name != "__pycache__" and f"{name}.{entry.name}" not in packages:
                (target / entry.name).symlink_to(entry)


def main(args: list[str]) -> int:
    pyproject = ROOT / "pyproject.toml"
    lay_out(TREE, package_dirs(pyproject))
    # The cache sits beside the tree, which is rebuilt on every run.
    cache = ROOT / "build" / "mypy_cache"
    command = [sys.executable, "-m", "mypy", "--config-file", str(pyproject), "--cache-dir", str(cache)]
    return subprocess.run(command + args, cwd=TREE).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
