"""Build script: package layout plus the optional native extension `swiftserve._C`.

The extension is a plain pybind11 module over raw pointers (no libtorch link), so it builds with
any C++17 compiler. If it cannot be built (no compiler, no pybind11), installation still succeeds
and swiftserve falls back to its torch paths.
"""

import os
import sys
from glob import glob

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

TOP_LEVEL = ("kernels", "scheduler", "router")  # mapped to swiftserve.<name> in pyproject


def _packages() -> list[str]:
    pkgs = find_packages("src")
    for top in TOP_LEVEL:
        pkgs.append(f"swiftserve.{top}")
        pkgs += [f"swiftserve.{top}.{sub}" for sub in find_packages(top)]
    return pkgs


class OptionalBuildExt(build_ext):
    """Builds `_C` when possible; a failure is reported, not fatal."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no native kernels"
            print(f"swiftserve: skipping native extension ({exc})", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"swiftserve: skipping {ext.name} ({exc})", file=sys.stderr)


def _extensions() -> list:
    sources = sorted(glob("csrc/**/*.cpp", recursive=True))
    if not sources or os.environ.get("SWIFTSERVE_NO_EXT") == "1":
        return []
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:
        return []
    # -Wno-maybe-uninitialized: GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*).
    args = ["-O3", "-fopenmp", "-ffast-math", "-fno-finite-math-only", "-Wno-maybe-uninitialized"]
    if os.environ.get("SWIFTSERVE_PORTABLE") != "1":
        args.append("-march=native")
    return [
        Pybind11Extension(
            "swiftserve._C",
            sources,
            include_dirs=["csrc"],
            depends=sorted(glob("csrc/**/*.h", recursive=True)),  # rebuild when a kernel header changes
            cxx_std=17,
            extra_compile_args=args,
            extra_link_args=["-fopenmp"],
        )
    ]


setup(
    packages=_packages(),
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
