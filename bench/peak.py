"""The machine's measured matmul peak in fp32 and bf16: the ceiling that MFU figures are measured against.

A large square matmul (n x n times n x n, 2 n^3 FLOPs) is about the best case for the CPU's BLAS/oneDNN
kernels; the peak is the median GFLOP/s of a few timed runs after a warm-up, with torch's thread count as
the rest of the benchmark uses it. bf16 multiplies bf16 tensors directly (what autocast's matmuls do). On a
CPU without bf16 instructions (AVX512-BF16 or AMX) torch emulates bf16 at 0.3-1.3 GFLOP/s, so there it is
measured at 512^3 (a fraction of a second a product, not a minute) and marked `"native": false`.

    python -m bench.peak [--size 2048] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from s2s.precision import bf16_is_native

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
EMULATED_BF16_SIZE = 512


def matmul_gflops(size: int, dtype: torch.dtype, *, runs: int, min_seconds: float = 0.2) -> list[float]:
    """GFLOP/s of `runs` timed batches of (size x size) @ (size x size) products, after an untimed warm-up.

    Each timed run repeats the product enough times to last about `min_seconds`, so a small size is not
    a measurement of timer resolution and thread wake-up.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    started = time.perf_counter()
    torch.matmul(a, b, out=out)  # warm-up: kernel selection, page faults of the output
    torch.matmul(a, b, out=out)
    repeats = max(1, math.ceil(min_seconds / max((time.perf_counter() - started) / 2, 1e-9)))
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        rates.append(repeats * 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return rates


def run(*, size: int = 2048, runs: int = 5) -> dict:
    """Median GFLOP/s per precision, with the individual runs and the bf16/fp32 speed ratio."""
    if size < 1 or runs < 1:
        raise ValueError(f"size and runs must be >= 1, got size={size}, runs={runs}")
    result: dict = {"size": size, "runs": runs, "threads": torch.get_num_threads()}
    native = bf16_is_native(on_cuda=False)
    for name, dtype in DTYPES.items():
        this_size = size if name == "fp32" or native else min(size, EMULATED_BF16_SIZE)
        rates = matmul_gflops(this_size, dtype, runs=runs)
        result[name] = {"gflops": round(statistics.median(rates), 2), "runs": [round(r, 2) for r in rates]}
        if name == "bf16":
            result[name] |= {"native": native, "size": this_size}
    result["bf16_over_fp32"] = round(result["bf16"]["gflops"] / result["fp32"]["gflops"], 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(run(size=args.size, runs=args.runs)))


if __name__ == "__main__":
    main()
