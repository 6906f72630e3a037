"""One command that checks the project on a GPU and compares it with Hugging Face there.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python -m bench.gpu --out DIR        # one CUDA GPU, about 6 minutes
    python -m bench.gpu --device cpu --tiny --out DIR                    # the same code on CPU, about a minute

Sections, in order, each under its own time cap, each recorded (figures, or the traceback) whatever happens to
the others: `environment` (nvidia-smi, versions), `tests` (pytest -m cuda on tests/s2s/test_cuda.py), `peak` (bf16
and fp32 matmul rates), `training` (target tokens/s, ours vs Hugging Face, bf16) and `generation` (sequences/s,
greedy and beam search, bf16 and fp32). `results.json` and `results.md` in `--out` are rewritten after every
section, next to `cuda_tests.log`. The exit code is 0 when every section ran (a failed test or a slow figure
is a result, not an error of the check).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import CACHE, REPO
from bench.gpu import environment, generation, peak, training
from bench.gpu.harness import Results, log
from bench.gpu.report import render
from bench.gpu.settings import FULL, TINY
from bench.gpu.tests import run_cuda_tests

SECTIONS = ("environment", "tests", "peak", "training", "generation")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=CACHE / "gpu", help="folder for results.json/.md and logs"
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny models and few steps (a check of the check)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all, in that order)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(
            "--device cuda but torch sees no CUDA device; run with --device cpu --tiny to check on CPU"
        )
    return args


def git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = TINY if args.tiny else FULL
    device = torch.device(args.device)
    meta = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "mode": settings.name,
        "device": str(device),
        "commit": git_commit(),
        "settings": dataclasses.asdict(settings),
    }
    results = Results(args.out, meta, render)
    log(f"{settings.name} check on {device}, results in {args.out}")
    caps = settings.caps
    measured_peak: dict = {}
    steps = {
        "environment": lambda partial: environment.describe(device, partial),
        "tests": lambda partial: run_cuda_tests(args.out, timeout=caps["tests"] - 5, partial=partial),
        "peak": lambda partial: (
            measured_peak.update(
                peak.measure(device, size=settings.peak_size, runs=settings.peak_runs, partial=partial)
            )
            or measured_peak
        ),
        "training": lambda partial: training.run(settings, device, peak=measured_peak, partial=partial),
        "generation": lambda partial: generation.run(settings, device, peak=measured_peak, partial=partial),
    }
    for name in args.sections:
        results.run(name, steps[name], cap=caps[name])
    log(f"done: {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
