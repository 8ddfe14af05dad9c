"""The test process sees installed packages, not this repository's folders of the same name, and
has the network switched off."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN = "swiftserve"


def _inside_repository(name: str) -> list[str]:
    try:
        spec = importlib.util.find_spec(name)
    except ValueError:
        # Imported already by a package that replaced its module with an object of its own
        # (Ray's `colorful` does): no spec, but the object still says where it came from.
        places = [getattr(sys.modules[name], "__file__", None)]
    else:
        if spec is None:
            return []
        places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    return [p for p in places if p and Path(p).resolve().is_relative_to(ROOT)]


def test_no_installed_top_level_module_resolves_into_the_repository():
    shadowed = {}
    for name, dists in importlib.metadata.packages_distributions().items():
        if OWN in dists or not name.isidentifier():
            continue
        if places := _inside_repository(name):
            shadowed[name] = (dists, places)
    assert not shadowed, f"installed distributions' modules resolve into the repository: {shadowed}"


def test_the_installed_kernels_package_is_the_one_transformers_gets():
    reason = "kernels is transformers' dependency, not ours: a transformers release may drop it"
    kernels = pytest.importorskip("kernels", reason=reason, exc_type=ModuleNotFoundError)

    assert not Path(kernels.__file__).resolve().is_relative_to(ROOT)
    assert "kernels" in importlib.metadata.packages_distributions()


@pytest.mark.parametrize("name", ["kernels", "router", "scheduler", "models", "loader", "server", "engine"])
def test_no_repository_folder_is_importable_by_its_bare_name(name):
    # These exist only as swiftserve.<name> (package-dir mapping) and as test packages under
    # tests/: importable bare, they would shadow any distribution that ships the name.
    assert _inside_repository(name) == []


def test_the_root_on_sys_path_is_refused_with_a_clear_message():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_environment.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "is on sys.path" in run.stdout + run.stderr and "python -P -m pytest" in run.stdout + run.stderr


def test_network_switches_are_off():
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SWIFTSERVE_OFFLINE"):
        assert os.environ[key] == "1"
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE
