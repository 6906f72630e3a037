"""Sections of the GPU check, each under a time cap, each recorded whatever happens to it.

A section is a function returning a JSON-able dict. It runs under a wall-clock cap (SIGALRM raises
`SectionTimeout` in it); a failure or a timeout is recorded with its traceback and the next section runs.
The results (JSON and markdown) are rewritten after every section, so a run killed from outside still leaves
the figures of the sections it finished.
"""

from __future__ import annotations

import datetime
import json
import signal
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SectionTimeout(Exception):
    """A section ran past its cap."""


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[bench.gpu {stamp}] {message}", flush=True)


@contextmanager
def time_cap(seconds: float):
    """Raise `SectionTimeout` in the main thread after `seconds` (checked between Python bytecodes: a single
    long C call, e.g. a device synchronisation, finishes first)."""

    def expire(signum, frame):
        raise SectionTimeout(f"stopped after its cap of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Results:
    """The run's results: `meta` and one entry per section, written to `results.json` and `results.md`
    under `out` after every section."""

    def __init__(self, out: Path, meta: dict[str, Any], render: Callable[[dict], str]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "sections": {}}
        self.render = render
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, section: Callable[[], dict], *, cap: float) -> dict:
        log(f"section {name} (cap {cap:.0f} s)")
        started = time.perf_counter()
        entry: dict[str, Any] = {"status": "ok"}
        partial: dict[str, Any] = {}
        try:
            with time_cap(cap):
                entry["result"] = section(partial)
        except SectionTimeout as err:
            entry.update(status="timeout", error=str(err), traceback=traceback.format_exc())
        except Exception as err:  # noqa: BLE001 - every failure is recorded, the next section runs
            entry.update(
                status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()
            )
        if entry["status"] != "ok" and partial:
            entry["result"] = partial  # what the section had measured before it stopped
        entry["seconds"] = round(time.perf_counter() - started, 2)
        self.data["sections"][name] = entry
        self.write()
        log(
            f"section {name}: {entry['status']} in {entry['seconds']:.1f} s"
            + (f" ({entry['error']})" if "error" in entry else "")
        )
        return entry

    def skip(self, name: str, reason: str) -> None:
        self.data["sections"][name] = {"status": "skipped", "error": reason, "seconds": 0.0}
        self.write()

    def write(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        (self.out / "results.md").write_text(self.render(self.data))
