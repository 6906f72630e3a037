"""Mixed precision: whether the hardware computes bf16 natively, the autocast context of a forward pass,
the fp16 gradient scaler, and the ``debug="underflow_overflow"`` hooks that name the first module whose
output is inf/NaN."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable

import torch
from torch import nn


def bf16_is_native(*, on_cuda: bool) -> bool:
    """Whether bf16 matmuls run on this device's own instructions, so that bf16 autocast is faster than fp32.

    GPUs from Ampere (compute capability 8) on have bf16 tensor cores. x86 CPUs need AVX512-BF16 or AMX;
    without them oneDNN converts bf16 products to fp32 on the fly, and the backward pass's matmuls take a
    far slower path still: on a 2-core AVX2 machine a training step of the `small` preset took 19.6 s
    under bf16 autocast against 0.61 s in fp32. Other CPUs (ARM) answer through oneDNN's own check."""
    if on_cuda:
        return torch.cuda.get_device_capability()[0] >= 8
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        if avx512_bf16 is None or amx is None:  # an old torch that cannot tell: assume not
            return False
        return bool(avx512_bf16() or amx())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(args, *, evaluating: bool = False) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bf16 or fp16 as the arguments ask, else a no-op. Evaluation with
    ``bf16_full_eval``/``fp16_full_eval`` casts the model itself, so it needs no autocast."""
    if evaluating and (args.bf16_full_eval or args.fp16_full_eval):
        return contextlib.nullcontext()
    device_type = args.device.type
    if args.bf16:
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if args.fp16:
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(args) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none. The scaler lives on the
    training device, so its overflow flag reaches a fused optimizer's step without a host read."""
    return torch.amp.GradScaler(args.device.type) if args.fp16 else None


def install_overflow_hooks(model: nn.Module, *, current_step: Callable[[], int]) -> None:
    """Raise ``FloatingPointError`` at the first module whose output holds inf/NaN, naming it and the
    step (``current_step()``), instead of finding a NaN loss many layers later."""

    def hook(module, inputs, output, name):
        for t in _tensors_of(output):
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise FloatingPointError(
                    f"debug=underflow_overflow: module {name or '<model>'} ({type(module).__name__}) produced "
                    f"inf/NaN at step {current_step()}"
                )

    for name, module in model.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))


def _tensors_of(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    values = output.values() if isinstance(output, dict) else output if isinstance(output, tuple) else []
    return [t for t in values if isinstance(t, torch.Tensor)]
