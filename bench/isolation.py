"""Each comparison of `python -m bench` in a fresh process.

What one comparison leaves behind in a process slows the next one, and not evenly. Measured: in one process
after the other comparisons, `s2s.Trainer` training a BART ran at 0.84x Hugging Face's `Trainer` (fp32); alone
in a fresh process, at 1.05x. CTranslate2's OpenMP runtime, once its threads have run, made torch's small
operations 20-30% slower for the rest of the process (see `bench.ct2_reference.CT2Process`). So each
comparison runs in a spawned child that loads the toolkits and the data itself, with the parent's thread count.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import torch

from bench.common import Profile


def run_isolated(name: str, profile: Profile, *, cache: Path, peak: dict | None) -> dict:
    """`bench.__main__.run_comparison(name, ...)` in a spawned child process; its result dict (an exception
    in the child is raised here)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_child, (name, profile, str(cache), peak, torch.get_num_threads()))


def _child(name: str, profile: Profile, cache: str, peak: dict | None, threads: int) -> dict:
    torch.set_num_threads(threads)
    from bench.__main__ import run_comparison

    return run_comparison(name, profile, cache=Path(cache), peak=peak)
