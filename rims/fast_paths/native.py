"""Optional C++ time loops for :mod:`rims.fast_paths.fused`, built on first use.

``rims/fast_paths/csrc/fused_loop.cpp`` computes what the Python loops of :mod:`rims.fast_paths.python_loops` compute,
without the interpreter's cost per operation (which dominates a RIM step at small batch sizes,
e.g. recurrent PPO minibatches): the same matrix products, with some runs of small element-wise
ATen operations done in one pass over the data. It is compiled once per machine with
``torch.utils.cpp_extension`` (a C++ compiler and ``ninja`` are needed; the build is cached
under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), tuned to the CPU it
runs on (:func:`cpu_tuning`; one build per CPU model, so a cache shared between machines stays
safe). Without a compiler, or with ``RIMS_NATIVE=0`` in the environment, the Python loops run
instead: the same results up to rounding (sums and exponentials in another order; float64 tests
agree to 1e-10), so a near-tie between two units' selection scores may be broken differently.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "fused_loop.cpp"
_loaded: dict[str, ModuleType | None] = {}


def enabled() -> bool:
    """Whether the environment allows the C++ loops (``RIMS_NATIVE`` is not ``0``)."""
    return os.environ.get("RIMS_NATIVE", "1").strip() != "0"


def native_loops() -> ModuleType | None:
    """The compiled loops, building them on the first call; ``None`` if unavailable or disabled."""
    if not enabled():
        return None
    if "module" not in _loaded:
        _loaded["module"] = _build()
    return _loaded["module"]


def loops_for(tensor: Tensor) -> ModuleType | None:
    """The compiled loops if they apply to ``tensor`` (CPU, float32 or float64), else ``None``.

    The gate kernels in C++ read memory directly, so other devices and dtypes take the Python
    loops.
    """
    if tensor.device.type != "cpu" or tensor.dtype not in (torch.float32, torch.float64):
        return None
    return native_loops()


def cpu_tuning() -> tuple[list[str], str]:
    """Compiler flags that tune the loops to this CPU, and a key that names the CPU.

    On Linux x86-64: ``-march=native`` (wider vectors and FMA for the one-pass kernels: the
    training step at PPO's shape took 0.95x the time of the generic x86-64 build on an AMD EPYC
    VM), keyed by the CPU's model name and feature flags from ``/proc/cpuinfo``. Elsewhere no
    flags and the key ``"generic"``.
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return [], "generic"
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return [], "generic"
    identity = sorted({line for line in info.splitlines() if line.startswith(("model name", "flags"))})
    if not identity:
        return [], "generic"
    return ["-march=native"], hashlib.sha1("\n".join(identity).encode()).hexdigest()[:12]


def _build() -> ModuleType | None:
    try:
        from torch.utils.cpp_extension import load

        log.info("rims: loading the C++ time loops (the first time on a machine builds them, ~40 s)")
        tuning, cpu = cpu_tuning()
        # one build per installed copy and CPU: checkouts at other paths would otherwise rebuild in
        # turn, and a cache shared between machines must not hand one CPU's code to another
        name = "rims_fused_loop_" + hashlib.sha1(f"{SOURCE.resolve()}|{cpu}".encode()).hexdigest()[:10]
        flags = ["-O3", "-fno-trapping-math", *tuning]
        with _ninja_on_path():
            return load(name=name, sources=[str(SOURCE)], extra_cflags=flags, verbose=False)
    except Exception as exc:  # no compiler, no ninja, read-only cache, ...: fall back, say why
        log.warning("rims: C++ time loops unavailable, using the Python loops (%s: %s)", type(exc).__name__, exc)
        return None


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """While building: if ``ninja`` is not on ``PATH`` but next to this Python (``pip install ninja``
    puts it there), put that folder on ``PATH`` (``torch.utils.cpp_extension`` runs ``ninja`` by
    name) and restore ``PATH`` afterwards; the process's environment is left as it was."""
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja") is not None or shutil.which("ninja", path=scripts) is None:
        yield
        return
    before = os.environ.get("PATH")
    log.info("rims: building with ninja from %s (PATH is restored after the build)", scripts)
    os.environ["PATH"] = scripts + os.pathsep + (before or "")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before
