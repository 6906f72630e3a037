"""Each comparison of `python -m bench` in a fresh process.

What one comparison leaves behind in a process slows the next one, and not evenly. Measured: in one process
after the other comparisons, `s2s.Trainer` training a BART ran at 0.84x Hugging Face's `Trainer` (fp32);
alone in a fresh process, at 1.01x-1.05x (two runs). CTranslate2's OpenMP runtime, once its threads have run,
made torch's small operations 20-30% slower for the rest of the process (see `bench.ct2_reference.CT2Process`).
So each comparison runs in a spawned child that loads the toolkits and the data itself, with the parent's
thread count.
"""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import torch

from bench.common import Profile


def run_isolated(name: str, profile: Profile, *, cache: Path, peak: dict | None) -> dict:
    """`bench.__main__.run_comparison(name, ...)` in a spawned child process and its result dict; a failure in
    the child is raised here with the child's traceback. A plain (non-daemon) process, not a pool worker: the
    generation comparison starts a child of its own for CTranslate2."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    args = (send, name, profile, str(cache), peak, torch.get_num_threads())
    process = context.Process(target=_child, args=args)
    process.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(
            f"{name}: its process ended (exit code {process.exitcode}) without reporting a result"
        ) from None
    finally:
        receive.close()
    process.join()
    if status == "error":
        raise RuntimeError(f"{name}, in its own process:\n{value}")
    return value


def _child(conn, name: str, profile: Profile, cache: str, peak: dict | None, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        from bench.__main__ import run_comparison

        conn.send(("ok", run_comparison(name, profile, cache=Path(cache), peak=peak)))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
