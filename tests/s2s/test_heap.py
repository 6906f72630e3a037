"""Trimming the C heap: its effect on a fragmented glibc heap, and when the trainer does it."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import pytest

from s2s import heap
from s2s.heap import HeapTrimCallback, release_free_heap_memory
from tests.s2s.test_trainer import make_trainer

glibc = pytest.mark.skipif(heap._malloc_trim() is None, reason="malloc_trim is glibc's")


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


@glibc
def test_trim_returns_the_free_pages_between_blocks_still_in_use():
    """64 KiB blocks (under glibc's mmap threshold: they come from the heap), 15 of every 16 freed: the free
    runs sit between live blocks, so the heap cannot shrink from its top; only a trim gives them back."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 << 10, 4096  # 256 MiB
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, size)  # touched: resident
    kept = blocks[::16]
    for i, block in enumerate(blocks):
        if i % 16:
            libc.free(block)
    try:
        before = resident_kib()
        assert release_free_heap_memory()
        returned = before - resident_kib()
        assert returned > 150 << 10, f"the trim returned only {returned} KiB of ~240 MiB free"
    finally:
        for block in kept:
            libc.free(block)


def test_the_callback_trims_every_n_updates_and_after_evaluation_and_prediction(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "release_free_heap_memory", lambda: calls.append(1) or True)
    callback = HeapTrimCallback(every=50)
    for step in range(1, 121):
        callback.on_step_end(None, SimpleNamespace(global_step=step), None)
    assert len(calls) == 2  # after updates 50 and 100
    callback.on_evaluate(None, None, None)
    callback.on_predict(None, None, None)
    assert len(calls) == 4


def test_the_trainer_trims_by_default(tmp_path):
    trainer = make_trainer(tmp_path)
    assert any(isinstance(c, HeapTrimCallback) for c in trainer.callback_handler.callbacks)
