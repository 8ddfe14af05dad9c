"""What the 'cpp' kernel wrappers share: the handle on swiftserve._C, its keyword calls, the input
checks and the reasons an input has no native kernel.

Every wrapper calls `_C` through `calls.<kernel>(name=value, ...)`, which looks `cpp_native._C` up
at call time, so replacing `_C` here (`generic_flavour()`: the tests' portable-kernel fixture and
cpu_bench.py; benchmarks/op_timer.py) reaches all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import torch
from swiftserve.kernels.errors import UnsupportedInputError

try:
    from swiftserve import _C
except ImportError as exc:  # the extension was not built: the cpp backend is unavailable
    _C = None
    IMPORT_ERROR: str | None = str(exc)
else:
    IMPORT_ERROR = None

NATIVE_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
HEAD_DIMS = frozenset(_C.head_dims) if _C is not None else frozenset()
MAX_GROUP = _C.max_group if _C is not None else 0
KERNELS = (
    "fused_add_rms_norm",
    "linear",
    "llama_decode_layers",
    "paged_decode_attention",
    "paged_prefill_attention",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "store_kv",
)
# Functions a _C built before them lacks (an in-place build not yet redone): `calls` has them
# only when this _C does, and their callers check has() and fall back, instead of every import
# of the kernels failing on one missing name.
OPTIONAL = ("apply_token_bitmask", "read_chunks")


def is_available() -> bool:
    return _C is not None


# _C.isa, the vector flavour its kernels run (csrc/cpu/vec.h), in words.
ISA_NAMES = {
    "avx512": "AVX-512 kernels",
    "avx2": "AVX2 kernels (no AVX-512)",
    "generic": "generic kernels (no AVX2 or AVX-512)",
}


def status() -> str:
    """What this install's _C is, or why there is none."""
    if _C is None:
        return f"swiftserve._C not built ({IMPORT_ERROR})"
    build = "portable build" if getattr(_C, "portable", False) else "-march=native build"
    isa = ISA_NAMES.get(_C.isa, f"{_C.isa} kernels")
    return f"native C++, {build}, {isa}, {_C.num_threads()} threads"


def flavour() -> str | None:
    """The vector flavour the kernels run now (an ISA_NAMES key), or None without _C."""
    return None if _C is None else _C.isa


def has(name: str) -> bool:
    """Whether this _C has the optional function `name` (see OPTIONAL)."""
    return _C is not None and hasattr(_C, name)


def parameters(fn) -> dict[str, bool]:
    """The parameters of a pybind11 function in order, each with whether it has a default, read
    from the signature pybind11 writes into its docstring from the py::arg declarations."""
    signature = fn.__doc__.split("\n", 1)[0]
    inside = signature[signature.index("(") + 1 : signature.rindex(") ->")]
    found: dict[str, bool] = {}
    for part in filter(None, inside.split(", ")):
        name, _, annotation = part.partition(": ")
        if not name.isidentifier():
            raise RuntimeError(f"cannot read the signature of {signature!r}")
        found[name] = " = " in annotation
    return found


def required_parameters(fn) -> tuple[str, ...]:
    """The parameters of a pybind11 function that have no default, in order."""
    return tuple(name for name, has_default in parameters(fn).items() if not has_default)


class GenericC:
    """`c` (a _C) with every kernel that has a vector flavour called with generic=True: the same
    build running the portable Generic flavour instead of its native one (AVX-512 or AVX2)."""

    isa = "generic"

    def __init__(self, c) -> None:
        self._c = c

    def __getattr__(self, name: str):  # first use of a name; then it is an instance attribute
        attr = getattr(self._c, name)
        if callable(attr) and attr.__doc__ and "generic" in parameters(attr):
            attr = functools.partial(attr, generic=True)
        setattr(self, name, attr)
        return attr


@contextmanager
def generic_flavour() -> Iterator[None]:
    """Every cpp kernel called inside runs the Generic flavour (see GenericC). Not thread-safe:
    it swaps this module's `_C` for the whole process while it is open."""
    global _C
    native = _C
    if native is None:
        raise RuntimeError(status())
    _C = GenericC(native)
    try:
        yield
    finally:
        _C = native


def _keyword_only(name: str):
    """_C.<name> taking keyword-only arguments named exactly as its py::arg declarations, passed on
    positionally: a missing, misspelt or extra name raises TypeError before _C runs, so no value
    can land in its neighbour's place. Generated (as collections.namedtuple generates __new__)
    because a Python keyword call costs about half of what pybind11's own keyword matching does
    (benchmarks/kernels/dispatch_overhead.py); defaulted parameters (`generic`) are left out."""
    params = ", ".join(required_parameters(getattr(_C, name)))
    source = f"def {name}(*, {params}):\n    return _C.{name}({params})\n"
    namespace: dict = {}
    exec(source, globals(), namespace)  # noqa: S102 - the source is built from _C's own signature
    return namespace[name]


# calls.<kernel>(**named arguments): every call into _C goes through these.
calls = (
    SimpleNamespace(**{name: _keyword_only(name) for name in KERNELS + tuple(filter(has, OPTIONAL))})
    if _C is not None
    else None
)


def unsupported(op: str, reason: str | None) -> None:
    """Raises UnsupportedInputError when a support predicate gave a reason."""
    if reason is not None:
        raise UnsupportedInputError(op, "cpp", reason)


def dtype_reason(dtype: torch.dtype) -> str | None:
    if dtype not in NATIVE_DTYPES:
        return f"{dtype} has no native kernel (float32, bfloat16)"
    return None


def attention_reason(dtype: torch.dtype, head_dim: int, group: int) -> str | None:
    """Why _C has no attention kernel for this dtype, head size and query heads per KV head."""
    if dtype not in NATIVE_DTYPES:
        return dtype_reason(dtype)
    if head_dim not in HEAD_DIMS:
        return f"head_dim {head_dim} is not one _C is built for {sorted(HEAD_DIMS)}"
    if group > MAX_GROUP:
        return f"{group} query heads per KV head, more than _C's {MAX_GROUP}"
    return None


def check_cpu(op: str, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cpu:
            raise ValueError(f"{op}: {name} is on {t.device}, the cpp backend runs on CPU tensors only")


def check_rows(op: str, name: str, t: torch.Tensor) -> None:
    """t [..., n] must be addressable as rows of n contiguous elements with one row stride."""
    if t.stride(-1) != 1 or (t.dim() > 2 and not t.is_contiguous()):
        raise ValueError(
            f"{op}: {name} must be contiguous (or a 2-D view with contiguous rows), got strides {t.stride()}"
        )


def int32(t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"index tensors must be torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.int32 and t.stride(-1) == 1:
        return t
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index tensors must be int32 or int64, got {t.dtype}")
    return t.to(torch.int32).contiguous()


def int64(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D int32 or int64 tensor")
    return t if t.dtype == torch.int64 and t.is_contiguous() else t.to(torch.int64).contiguous()
