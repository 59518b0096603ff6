"""This machine's reference figures, which other benchmarks divide by (e.g. the share of the
SGEMM rate that dense CNN prediction achieves)."""

import os
import time

import numpy as np


def sgemm_gflops(n=2048, repeats=5):
    """Best-of float32 n x n matrix product rate, in GFLOP/s (2 n^3 operations each)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"cores: {os.cpu_count()}")
    print(f"numpy {np.__version__} float32 matmul (SGEMM): {sgemm_gflops():.1f} GFLOP/s")
