"""Host reads in the decoding loops, kept off an accelerator's critical path.

Reading a CUDA tensor on the host (``bool(t)``, ``.item()``, ``.tolist()``) waits until the device has run
every kernel queued so far; while Python then prepares the next step the device has nothing to do. A decode
step is a few hundred small kernels, so the loops read nothing per step on CUDA: "every row finished" is
copied to pinned host memory without waiting and read once the copy has landed, and work that a host read
would let the loop skip is done unconditionally there. On CPU a read costs nothing, so it is done at once.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reads_stall(device: torch.device) -> bool:
    """Whether reading a tensor of ``device`` on the host waits for queued device work (CUDA)."""
    return device.type == "cuda"


def maybe_any(flags: Tensor) -> bool:
    """``bool(flags.any())`` where reading it is free; True (do the work) where it would stall the device.
    For work that changes nothing when no flag is set, so skipping it is only a saving."""
    return reads_stall(flags.device) or bool(flags.any())


class AllFinished:
    """``update(done)`` after each decoding step; True once every row of ``done`` is known to be finished.

    Where reads are free it is ``bool(done.all())`` at once. On CUDA the flag is copied asynchronously into
    pinned host memory and read when an event says the copy has landed (usually by the next step), so the
    loop may run a step or two past the end. Those steps only extend finished rows with padding and leave
    finished hypotheses alone, so the results are the same; the loops trim the padding columns."""

    def __init__(self, device: torch.device) -> None:
        self.deferred = reads_stall(device)
        self._pending = False
        if self.deferred:
            cuda = device.type == "cuda"
            self._host = torch.zeros((), dtype=torch.bool, pin_memory=cuda)
            self._view = self._host.numpy()  # read through numpy: a plain memory read, no tensor operation
            self._event = torch.cuda.Event() if cuda else None

    def update(self, done: Tensor) -> bool:
        if not self.deferred:
            return bool(done.all())
        if self._pending and (self._event is None or self._event.query()):
            self._pending = False
            if bool(self._view):
                return True
        if not self._pending:
            self._host.copy_(done.all(), non_blocking=True)
            if self._event is not None:
                self._event.record()
            self._pending = True
        return False
