"""Peak memory of this process, reported with the training metrics (unless ``skip_memory_metrics``)."""

from __future__ import annotations

import resource
import sys

import torch


def peak_memory_metrics(prefix: str) -> dict[str, int]:
    """``<prefix>_mem_cpu_peak`` (peak resident set size, bytes) and, when this process has used CUDA,
    ``<prefix>_mem_gpu_peak`` (the most memory torch's allocator held for tensors on the current GPU at any
    point, bytes; ``torch.cuda.max_memory_allocated``). A CPU run on a machine with a GPU reports no GPU
    figure, rather than a zero that reads as a measurement."""
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    metrics = {f"{prefix}_mem_cpu_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        metrics[f"{prefix}_mem_gpu_peak"] = torch.cuda.max_memory_allocated()
    return metrics
