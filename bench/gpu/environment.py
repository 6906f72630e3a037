"""What the figures were measured on: the GPU (nvidia-smi), the library versions, the attention kernels."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys

import torch

PACKAGES = ("torch", "transformers", "accelerate", "numpy", "safetensors", "sentencepiece", "tokenizers")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    proc = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
    return proc.stdout if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()}"


def describe(device: torch.device, partial: dict) -> dict:
    partial["versions"] = versions()
    partial["torch_cuda"] = torch.version.cuda
    partial["device"] = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        partial["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
        partial["sdpa_backends_enabled"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "memory_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
        }
        partial["fp32_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
    partial["cpu_threads"] = torch.get_num_threads()
    partial["nvidia_smi"] = nvidia_smi()
    return partial
