"""The device's measured matmul peak, the ceiling MFU is measured against (as `bench.peak` does on CPU).

n x n times n x n products (2 n^3 FLOPs each), timed after a warm-up with the device synchronised before the
clock is read; the peak is the median rate over `runs` batches of products. bf16 multiplies bf16 tensors
(what autocast's matmuls do); fp32 runs in full fp32 (TF32 left as the process has it, reported).
"""

from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(size: int, dtype: torch.dtype, device: torch.device, *, runs: int) -> list[float]:
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=g).to(dtype)
    b = torch.randn(size, size, device=device, generator=g).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, clocks ramping up
        torch.matmul(a, b, out=out)
    synchronize(device)
    started = time.perf_counter()
    torch.matmul(a, b, out=out)
    synchronize(device)
    repeats = max(1, round(0.05 / max(time.perf_counter() - started, 1e-6)))  # ~50 ms per timed batch
    rates = []
    for _ in range(runs):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        synchronize(device)
        rates.append(repeats * 2 * size**3 / (time.perf_counter() - started) / 1e12)
    return rates


def measure(device: torch.device, *, size: int, runs: int, partial: dict) -> dict:
    partial.update(size=size, runs=runs, tf32=torch.backends.cuda.matmul.allow_tf32)
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rates = matmul_tflops(size, dtype, device, runs=runs)
        partial[name] = {"tflops": statistics.median(rates), "runs": [float(f"{r:.4g}") for r in rates]}
    return partial
