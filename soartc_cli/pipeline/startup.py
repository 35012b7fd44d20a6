"""Process set-up done before numpy is imported (see PERF_NOTES: BLAS threads, page faults).

Numeric work here is many small matrix products, one image at a time; several BLAS threads per
process only fight over the cores with the worker processes, so the command-line program asks for
one BLAS thread per process. glibc's allocator would return every large temporary to the kernel and
fault it back in for the next image; raising both thresholds keeps those pages in the process.
Library users who import ``soartc_cli`` in a notebook are not affected: only the CLI calls this.
"""

import ctypes
import os
import sys

_THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def single_thread_environment() -> dict[str, str]:
    """Environment variables that give a new process one BLAS/OpenMP thread and a calm malloc."""
    env = {name: "1" for name in _THREAD_VARIABLES}
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    env["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    return env


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (both: either alone made things worse).

    Returns True when glibc took both settings; a no-op returning False elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter already uses
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def prepare_process() -> None:
    """Set one BLAS thread (unless the user chose otherwise) and tune malloc, before numpy loads."""
    for name, value in single_thread_environment().items():
        if name.startswith("MALLOC_"):
            continue
        os.environ.setdefault(name, value)
    tune_malloc()


# OpenBLAS builds name their thread-count functions differently (numpy's bundled scipy-openblas
# adds a prefix and a 64-bit-integer suffix).
_OPENBLAS_SETTERS = (
    "openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
)


def loaded_openblas() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries this process has loaded (read from /proc/self/maps; Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    libraries = []
    for path in sorted(paths):
        if path.startswith("/") and ".so" in path:
            try:
                libraries.append(ctypes.CDLL(path))
            except OSError:
                continue
    return libraries


def limit_blas_threads(count: int = 1) -> int:
    """Set the thread count of every loaded OpenBLAS (after numpy was imported); how many were set.

    A worker forked from a process whose numpy started with several BLAS threads would otherwise
    run them all, and workers × threads on the same cores made the products up to 8× slower.
    """
    done = 0
    for library in loaded_openblas():
        for name in _OPENBLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = (ctypes.c_int,)
                setter.restype = None
                setter(count)
                done += 1
                break
    return done
