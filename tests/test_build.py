"""setup.py stops, and says why, when it cannot build swiftserve._C (no silent torch-only install)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HINT = "set SWIFTSERVE_NO_EXT=1"


def _setup(*args: str, env: dict[str, str] | None = None, hide_pybind11: bool = False):
    # sys.modules[name] = None makes `import name` raise ImportError, as if it were not installed
    hide = "import sys; sys.modules['pybind11'] = None; " if hide_pybind11 else "import sys; "
    code = f"{hide}sys.argv = ['setup.py', *{list(args)!r}]; import runpy; runpy.run_path('setup.py')"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_pybind11_fails_naming_it_and_the_way_out():
    result = _setup("--version", hide_pybind11=True)
    assert result.returncode != 0
    assert "cannot build the native extension swiftserve._C: pybind11 is not installed" in result.stderr
    assert "pip install pybind11" in result.stderr and HINT in result.stderr


def test_no_ext_builds_without_it_on_purpose():
    result = _setup("--version", env={"SWIFTSERVE_NO_EXT": "1"}, hide_pybind11=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == version("swiftserve")  # the editable install


def test_missing_compiler_fails_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-g++")
    result = _setup(
        "build_ext",
        "--build-lib",
        str(tmp_path / "lib"),
        "--build-temp",
        str(tmp_path / "tmp"),
        env={"CXX": missing, "CC": missing},
    )
    assert result.returncode != 0
    assert f"no C++ compiler: '{missing}' is not on PATH" in result.stderr
    assert HINT in result.stderr
    assert not list((tmp_path).rglob("_C*.so"))


def test_doctor_lists_every_backend_and_what_models_run():
    result = subprocess.run(
        [sys.executable, "-m", "swiftserve.cli", "doctor"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for name in ("torch", "triton", "cpp", "cuda", "flash_attn"):
        assert f"] {name} " in result.stdout
    assert "models on cpu run: " in result.stdout
