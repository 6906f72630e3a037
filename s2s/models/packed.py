"""The decoder's weights prepacked for oneDNN, for the decode step on CPU (fp32, or bf16 under autocast).

A linear layer on CPU converts its weight into the matmul library's blocked layout on every call (oneDNN for
bf16, MKL for fp32); with the 64-256 rows of a decode step that conversion is a large part of the call.
Packing the decoder's weights once per `generate` call measured, 2 threads, 64 rows, us per call:

    weight        bf16 linear -> packed   fp32 linear -> packed
    256 -> 8000      834 -> 618             2095 -> 1349
    256 -> 1024      112 -> 92               213 -> 167
    256 -> 256        45 -> 35                53 -> 55

End to end (bench/generation.py) 4-beam bf16 decoding got 8-11% faster, fp32 greedy and 4-beam decoding
9-14%. Packing the 3+3-layer model of the benchmark takes 9 ms per call, against about 390 ms to decode its 64
sources greedily in bf16 (the figures include it); packs are not kept across calls, as the weights may change
between them (training). The fp32 pack gives the fp32 product up to summation order (about 1e-6 relative).
The encoder is not packed: at its thousands of rows per call the conversion is amortised (measured: 0-5%).

The operators are those torch's own compiler uses for the same purpose (`torch.ops.mkldnn`), not a public
API: `packing_available` checks for them, and without them the decode step calls the modules as usual.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

_OPERATORS = ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")
PACKED_DTYPES = (torch.float32, torch.bfloat16)


def packing_available(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> bool:
    """True on a CPU whose torch build has the oneDNN linear operators, for fp32, or for bf16 when the CPU
    supports bf16."""
    if device.type != "cpu" or dtype not in PACKED_DTYPES or not torch.backends.mkldnn.is_available():
        return False
    try:
        operators = torch.ops.mkldnn
        if not all(hasattr(operators, name) for name in _OPERATORS):
            return False
        return dtype == torch.float32 or bool(operators._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class PackedLinear:
    """`y = x @ weight.T + bias` in `dtype` with the weight packed once; the result is in `dtype` (bf16, as under
    autocast, or fp32)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, *, rows: int, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), rows)
        self.bias = None if bias is None else bias.detach().to(dtype)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.weight, self.bias, "none", [], "")


class PackedDecoderWeights:
    """Packed versions of the decoder's linear layers and of the output projection."""

    def __init__(
        self, linears: Iterable[nn.Linear], output_weight: Tensor, *, rows: int, dtype: torch.dtype
    ) -> None:
        self._linears = {
            module: PackedLinear(module.weight, module.bias, rows=rows, dtype=dtype) for module in linears
        }
        self.project = PackedLinear(output_weight, None, rows=rows, dtype=dtype)
        """Hidden states (..., d) -> logits (..., V) in `dtype`."""

    def linear(self, module: nn.Linear, x: Tensor) -> Tensor:
        """`module(x)` through its packed weight (or the module itself when it was not packed)."""
        packed = self._linears.get(module)
        return module(x) if packed is None else packed(x)
