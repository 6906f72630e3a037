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
sources greedily in bf16 (the figures include it). The fp32 pack gives the fp32 product up to summation order
(about 1e-6 relative).
The encoder is not packed: at its thousands of rows per call the conversion is amortised (measured: 0-5%).

Packs are made per `generate` call by default, because the weights may change between calls (training), and
a change made through `.data` does not move a tensor's version counter, so no check can be trusted to see every
change. Code that knows the weights stay fixed over many calls (a test-set decode, an evaluation, a server) says
so with the model's `fixed_weights()` block, and `ReusedPacks` then keeps the packs from one call to the next.
At BART-base size (32k x 768 output weight) packing took a third of a greedy bf16 decode of 8 sources on one
busy thread; on two quiet ones keeping the packs over 4 batches made decoding 0-6% faster (bench/README.md).

The operators are those torch's own compiler uses for the same purpose (`torch.ops.mkldnn`), not a public
API: `packing_available` checks for them, and without them the decode step calls the modules as usual.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

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


class ReusedPacks:
    """Packed decoder weights kept across `generate` calls inside a `fixed_weights()` block, one per
    (dtype, rows): the pack is laid out for a row count (a pack made for 8 rows and used for 256 measured 3x
    slower), and an evaluation meets a few of them (full batches, the last one, beams). The `keep` most recently
    used are held; each is a full copy of the decoder's weights.

    A pack is rebuilt when any weight it came from was replaced or changed in place (its identity, storage
    address or version counter moved: an optimizer step, `load_state_dict`, `copy_` under `no_grad`), so
    such a change inside the block is still seen. A write through `.data` is not: that is what the block
    promises not to do."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._entries: OrderedDict[tuple, tuple[tuple, PackedDecoderWeights]] = OrderedDict()
        self.builds = 0
        """How many packs were made (the rest of the calls reused one): what the tests check."""

    @staticmethod
    def _fingerprint(weights: Sequence[Tensor]) -> tuple:
        return tuple((id(w), w.data_ptr(), w._version) for w in weights)

    def get(
        self,
        weights: Sequence[Tensor],
        build: Callable[[], PackedDecoderWeights],
        *,
        rows: int,
        dtype: torch.dtype,
    ) -> PackedDecoderWeights:
        """The pack for (`dtype`, `rows`) made from `weights`, by `build()` unless a current one is kept."""
        key, fingerprint = (dtype, rows), self._fingerprint(weights)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == fingerprint:
            self._entries.move_to_end(key)
            return entry[1]
        packed = build()
        self.builds += 1
        self._entries[key] = (fingerprint, packed)
        self._entries.move_to_end(key)
        while len(self._entries) > self.keep:
            self._entries.popitem(last=False)
        return packed


def fixed_weights(model: nn.Module) -> contextlib.AbstractContextManager:
    """`model.fixed_weights()` for a model that has one (ours), else a block that changes nothing: for code that
    decodes many batches with any model, a Hugging Face one included."""
    block = getattr(model, "fixed_weights", None)
    return block() if callable(block) else contextlib.nullcontext()
