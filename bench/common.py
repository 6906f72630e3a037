"""Measurement machinery shared by the comparisons: run sizes, A/B alternation, medians, peak RSS.

Every comparison runs "ours" and "theirs" alternately (A B A B ...), so a slow drift of the machine (another
job starting, thermal throttling) hits both sides alike, and reports the median of the per-pair ratios.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / "results"  # git-ignored: tokenizers, scratch output folders


@dataclass(frozen=True)
class Profile:
    """How big each comparison is. `full` is the published run, `quick` a < 5 minute check, `smoke` the test."""

    name: str
    repetitions: int
    """A B pairs per measured cell; the reported ratio is the median over them."""
    model: dict[str, int] = field(default_factory=dict)
    """d_model, encoder_layers, decoder_layers, num_heads, ffn_dim of both models."""
    vocab_size: int = 8000
    """Joint sentencepiece vocabulary trained on Multi30k train (the model vocabulary too)."""
    train_examples: int | None = None
    """Multi30k training pairs used (None: all 29,000)."""
    batch_size: int = 64
    train_steps: int = 30
    """Optimizer steps timed per repetition, after `warmup_steps` untimed ones."""
    warmup_steps: int = 5
    precisions: tuple[str, ...] = ("fp32", "bf16")
    eval_examples: int = 1000
    eval_batch_size: int = 64
    eval_new_tokens: int = 32
    """Evaluation by generation is forced to exactly this many new tokens, so both sides do equal work."""
    num_beams: int = 4
    memory_examples: int = 5000
    memory_vocab_size: int = 32000
    memory_target_length: int = 10
    """Targets are cut to this many tokens: 5,000 x 10 x 32k float32 logits are 6.1 GiB, and a trainer that
    concatenates them holds about twice that at the end."""
    memory_cap_gb: float = 14.0
    """Address-space cap of each memory subprocess, so an evaluation that hoards logits fails alone instead
    of pushing the machine (23 GiB here) into the out-of-memory killer. A run that hits it is reported as
    "> cap"."""
    quality_seconds: float = 600.0
    quality_test_examples: int | None = None
    """Multi30k test2016 sentences scored for time to quality (None: all 1,000)."""
    quality_batch_size: int = 64
    quality_beams: int = 4
    quality_new_tokens: int = 64
    """Longest translation (new tokens) when scoring test2016; Multi30k references are under 50 tokens."""
    peak_size: int = 2048
    peak_runs: int = 5
    overhead_precisions: tuple[str, ...] = ("fp32", "bf16")
    generation_sources: int = 256
    """Random sources decoded per timed run by `bench.generation` (issue 4: 256 sources of 32 tokens)."""
    generation_source_length: int = 32
    generation_new_tokens: int = 48
    """Every output is forced to exactly this many new tokens (min = max), so all engines do equal work."""
    generation_batch_size: int = 64
    generation_beams: tuple[int, ...] = (1, 4)
    ct2_compute_types: tuple[str, ...] = ("float32", "int8", "bfloat16")
    """CTranslate2 compute types tried; those the CPU does not support are reported as skipped."""
    bare_steps: int = 10
    """Optimizer steps timed per repetition by `bench.model_training` (bare loop, no trainer)."""
    bare_length: int = 32
    """Source and target length of the bare loop's random batches (`batch_size` pairs each)."""


PROFILES = {
    "full": Profile(
        name="full",
        repetitions=3,
        model={"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "num_heads": 4, "ffn_dim": 1024},
    ),
    "quick": Profile(
        name="quick",
        repetitions=2,
        model={"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "num_heads": 4, "ffn_dim": 1024},
        train_steps=5,
        warmup_steps=1,
        eval_examples=64,
        eval_new_tokens=24,
        memory_examples=500,
        quality_seconds=45.0,
        quality_test_examples=200,
        peak_size=1536,
        peak_runs=3,
        overhead_precisions=("fp32",),
        generation_sources=64,
        bare_steps=4,
    ),
    "smoke": Profile(
        name="smoke",
        repetitions=1,
        model={"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 2, "ffn_dim": 64},
        vocab_size=400,
        train_examples=400,
        batch_size=8,
        train_steps=2,
        warmup_steps=1,
        precisions=("fp32",),
        eval_examples=8,
        eval_batch_size=4,
        eval_new_tokens=4,
        num_beams=2,
        memory_examples=32,
        memory_vocab_size=2000,
        memory_target_length=8,
        quality_seconds=1.0,
        quality_test_examples=8,
        quality_batch_size=8,
        quality_beams=1,
        quality_new_tokens=8,
        peak_size=128,
        peak_runs=2,
        overhead_precisions=("fp32",),
        generation_sources=8,
        generation_source_length=6,
        generation_new_tokens=4,
        generation_batch_size=4,
        generation_beams=(1, 2),
        ct2_compute_types=("float32", "int8"),
        bare_steps=2,
        bare_length=8,
    ),
}


def alternate(
    runs: dict[str, Callable[[], dict[str, float]] | None],
    repetitions: int,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, list[dict[str, float]]]:
    """Call each available runner once per repetition, in turn (A B A B ...); collect what each returns.

    A runner returns a dict with the measured `value` (and any extra figures, e.g. `mfu`). A runner that is
    None (its toolkit is missing) is skipped, so one side can still be measured alone.
    """
    results: dict[str, list[dict[str, float]]] = {name: [] for name, run in runs.items() if run is not None}
    for repetition in range(repetitions):
        for name, run in runs.items():
            if run is None:
                continue
            measured = run()
            results[name].append(measured)
            log(f"    rep {repetition + 1}/{repetitions} {name}: {measured['value']:,.2f}")
    return results


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def compare(
    ours: Sequence[dict[str, float]] | None,
    theirs: Sequence[dict[str, float]] | None,
    *,
    unit: str,
    higher_is_better: bool = True,
    **extra: Any,
) -> dict:
    """One result row: both sides' runs and medians, and the median of the per-repetition ratios.

    The ratio is ours/theirs when higher is better (throughput), theirs/ours otherwise (memory, time), so a
    ratio above 1 always means we are ahead. Ratios are paired by repetition (rep i of ours against rep i of
    theirs, measured back to back), which cancels slow drifts of the machine better than a ratio of medians.
    Any other numeric figure the runners return (e.g. `mfu`) is reported as its median per side.
    """
    ours, theirs = list(ours or []), list(theirs or [])
    a, b = [run["value"] for run in ours], [run["value"] for run in theirs]
    pairs = zip(a, b) if higher_is_better else zip(b, a)
    ratios = [x / y for x, y in pairs if y > 0]
    row: dict[str, Any] = {
        "unit": unit,
        "ours": median(a),
        "theirs": median(b),
        "ratio": median(ratios),
        "ours_runs": [round(v, 3) for v in a],
        "theirs_runs": [round(v, 3) for v in b],
    }
    for side, runs in (("ours", ours), ("theirs", theirs)):
        keys = sorted({key for run in runs for key in run if key != "value"})
        for key in keys:
            values = [run[key] for run in runs if isinstance(run.get(key), int | float)]
            if values:
                row[f"{key}_{side}"] = median(values)
    row.update(extra)
    return row


class Stopwatch:
    """`with Stopwatch() as watch: ...` then `watch.seconds`; perf_counter based."""

    def __enter__(self) -> Stopwatch:
        self.seconds = 0.0
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def peak_rss_mb() -> float:
    """Peak resident set size of this process's memory image so far, in MiB.

    Read from /proc/self/status `VmHWM`, not `ru_maxrss`: on Linux `ru_maxrss` survives `exec`, so a child
    forked from a big benchmark process would report the parent's size as its own peak. Falls back to
    `ru_maxrss` (KiB) where there is no /proc.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process, in MiB (from /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def run_module(
    module: str, args: list[str], *, timeout: float, cap_gb: float | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repository root in a fresh interpreter, output captured.

    With `cap_gb`, the child's address space is limited (RLIMIT_AS), so a run that would exhaust the
    machine's memory fails alone (an allocation error) instead of waking the out-of-memory killer.
    """

    def limit() -> None:
        if cap_gb is not None:
            cap = int(cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


def failure(proc: subprocess.CompletedProcess) -> str:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return f"exit code {proc.returncode}: " + " | ".join(tail)


def run_json_subprocess(module: str, args: list[str], *, timeout: float, cap_gb: float | None = None) -> dict:
    """`run_module`, then the JSON object on the child's last stdout line starting with "{"; on failure a
    dict with `error` (exit code and the last lines of stderr). A fresh process measures peak RSS from a
    clean start, with nothing left over from earlier comparisons."""
    proc = run_module(module, args, timeout=timeout, cap_gb=cap_gb)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"error": failure(proc)}


def log(message: str) -> None:
    print(message, flush=True)


def native_precisions(requested: tuple[str, ...]) -> tuple[str, ...]:
    """`requested` without bf16 where this CPU has no bf16 instructions (AVX512-BF16 or AMX): there torch
    emulates bf16 and a training step takes about 30x as long as in fp32, so a bf16 cell would time the
    emulation, not the engines, and run for hours."""
    from s2s.precision import bf16_is_native

    if bf16_is_native(on_cuda=False):
        return requested
    return tuple(p for p in requested if p != "bf16") or ("fp32",)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
