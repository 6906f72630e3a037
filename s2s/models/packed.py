"""The decoder's bf16 weights prepacked for oneDNN, for the decode step under bf16 on CPU.

A bf16 linear layer on CPU converts its weight into oneDNN's blocked layout on every call; with the 64-256
rows of a decode step that conversion is a large part of the call. Packing the decoder's weights once per
`generate` call measured, 2 threads, 64 rows: (256 -> 8000) 834 -> 618 us, (256 -> 1024) 112 -> 92 us,
(256 -> 256) 45 -> 35 us; 4-beam decoding 8-11% faster end to end (bench/generation.py). Packing the 3+3-layer
model of the benchmark takes 9 ms per call, against about 390 ms to decode its 64 sources greedily in bf16 (the
figures include it); packs are not kept across calls, as the weights may change between them (training).

The operators are those torch's own compiler uses for the same purpose (`torch.ops.mkldnn`), not a public
API: `packing_available` checks for them, and without them the decode step calls the modules as usual.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

_OPERATORS = ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")


def packing_available(device: torch.device) -> bool:
    """True on a CPU whose torch build has the oneDNN bf16 linear operators and whose CPU supports bf16."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        operators = torch.ops.mkldnn
        return all(hasattr(operators, name) for name in _OPERATORS) and bool(
            operators._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


class PackedLinear:
    """`y = x @ weight.T + bias` in bf16 with the weight packed once; the result is bf16, as under autocast."""

    def __init__(self, weight: Tensor, bias: Tensor | None, *, rows: int) -> None:
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16), rows)
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x.to(torch.bfloat16), self.weight, self.bias, "none", [], ""
        )


class PackedDecoderWeights:
    """Packed versions of the decoder's linear layers and of the output projection."""

    def __init__(self, linears: Iterable[nn.Linear], output_weight: Tensor, *, rows: int) -> None:
        self._linears = {module: PackedLinear(module.weight, module.bias, rows=rows) for module in linears}
        self.project = PackedLinear(output_weight, None, rows=rows)
        """Hidden states (..., d) -> bf16 logits (..., V)."""

    def linear(self, module: nn.Linear, x: Tensor) -> Tensor:
        """`module(x)` through its packed weight (or the module itself when it was not packed)."""
        packed = self._linears.get(module)
        return module(x) if packed is None else packed(x)
