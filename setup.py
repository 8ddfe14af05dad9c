"""Build script: package layout plus the native extension `swiftserve._C`.

The extension is a plain pybind11 module over raw pointers (no libtorch link), so any C++17
compiler builds it. Without it every model runs the torch reference kernels, several times slower
on CPU, so a build that cannot make it stops and says what is missing (pybind11, a C++ compiler,
or the compiler's error). Environment:
  SWIFTSERVE_NO_EXT=1    build without the extension, on purpose (the torch kernels only);
  SWIFTSERVE_PORTABLE=1  build it without -march=native (the portable kernels, no AVX-512).
"""

import os
import shutil
from glob import glob

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

TOP_LEVEL = ("kernels", "scheduler", "router")  # mapped to swiftserve.<name> in pyproject
NO_EXT_HINT = (
    "To install without the native kernels on purpose (every model then runs the torch reference "
    "kernels, several times slower on CPU), set SWIFTSERVE_NO_EXT=1."
)


def _fail(problem: str) -> SystemExit:
    message = f"swiftserve: cannot build the native extension swiftserve._C: {problem}."
    return SystemExit(f"{message}\n{NO_EXT_HINT}")


def _packages() -> list[str]:
    pkgs = find_packages("src")
    for top in TOP_LEVEL:
        pkgs.append(f"swiftserve.{top}")
        pkgs += [f"swiftserve.{top}.{sub}" for sub in find_packages(top)]
    return pkgs


def _missing_compiler(compiler) -> str | None:
    """The C++ compiler command when it is not on PATH (setuptools only finds out mid-build)."""
    for attr in ("compiler_so_cxx", "compiler_cxx"):  # unix compilers; others are left to fail
        command = getattr(compiler, attr, None)
        if command:
            return None if shutil.which(command[0]) else command[0]
    return None


class NativeBuildExt(build_ext):
    """Builds `_C`; any failure stops the build with the reason and the way out."""

    def build_extension(self, ext) -> None:
        if (missing := _missing_compiler(self.compiler)) is not None:
            raise _fail(f"no C++ compiler: {missing!r} is not on PATH (install g++, or set CXX)")
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - every failure gets the same explanation
            raise _fail(f"compiling {ext.name} failed ({exc}); the compiler's output is above") from exc


def _extensions() -> list:
    if os.environ.get("SWIFTSERVE_NO_EXT") == "1":
        return []
    sources = sorted(glob("csrc/**/*.cpp", recursive=True))
    if not sources:
        raise _fail("no C++ sources under csrc/ (an incomplete source tree?)")
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError as exc:
        raise _fail(
            f"pybind11 is not installed ({exc}). pip installs it for the build unless "
            "--no-build-isolation is given: then `pip install pybind11` first"
        ) from None
    # -Wno-maybe-uninitialized: GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*).
    args = ["-O3", "-fopenmp", "-ffast-math", "-fno-finite-math-only", "-Wno-maybe-uninitialized"]
    portable = os.environ.get("SWIFTSERVE_PORTABLE") == "1"
    args.append("-DSWIFTSERVE_PORTABLE_BUILD=1" if portable else "-march=native")
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
    cmdclass={"build_ext": NativeBuildExt},
)
