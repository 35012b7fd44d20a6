"""Process set-up: one BLAS thread per worker, glibc's allocator thresholds."""

import subprocess
import sys

from soartc_cli.pipeline.startup import single_thread_environment, tune_malloc

CHECK = r"""
import numpy  # starts OpenBLAS with its default thread count
from soartc_cli.pipeline.startup import limit_blas_threads, loaded_openblas
libraries = loaded_openblas()
names = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads")
get = next(getattr(lib, n) for lib in libraries for n in names if hasattr(lib, n))
before = get()
print(before, limit_blas_threads(1), get())
"""


def test_limit_blas_threads_sets_one_thread_after_numpy_started_with_more():
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    before, changed, after = map(int, proc.stdout.split())
    assert before == 2
    assert changed >= 1
    assert after == 1


def test_worker_environment_and_malloc():
    env = single_thread_environment()
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 * 1024 * 1024)
    assert tune_malloc() is (sys.platform.startswith("linux"))
