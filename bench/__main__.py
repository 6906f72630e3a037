"""Run the benchmark suite: s2s against Hugging Face transformers, side by side on this machine.

    python -m bench [--quick] [--only NAME ...]

writes bench/results.json (every run) and bench/results.md (the tables). `--quick` is a < 5 minute check
with fewer steps, repetitions and examples; the published figures come from the full run on a quiet
machine (a second job on 2 cores halves every figure). Comparisons: see bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from bench import (
    eval_generate,
    eval_memory,
    generation,
    hf_bart_base,
    model_training,
    peak,
    time_to_quality,
    trainer_overhead,
    trainer_throughput,
)
from bench.common import CACHE, PROFILES, REPO, Profile, cpu_name, log, native_precisions
from bench.data import BenchData, load_bench_data
from bench.isolation import run_isolated
from bench.report import merge, write
from bench.toolkits import Toolkit, available_toolkits

# Comparisons of this package: run(profile, data, toolkits, peak=...) -> dict
OWN = {
    "trainer_throughput": trainer_throughput.run,
    "eval_generate": eval_generate.run,
    "trainer_overhead": trainer_overhead.run,
    "eval_memory": eval_memory.run,
    "time_to_quality": time_to_quality.run,
    "generation": generation.run,
    "model_training": model_training.run,
    "hf_bart_base": hf_bart_base.run,
}
SYNTHETIC = {"generation", "model_training", "hf_bart_base"}
"""Comparisons on random ids: they need no Multi30k data or tokenizer (their `data` argument is None)."""
# Comparisons written elsewhere in bench/, called through their own entry points.
EXTERNAL = ("padding_efficiency",)
ORDER = (
    "padding_efficiency",
    "trainer_throughput",
    "eval_generate",
    "generation",
    "model_training",
    "hf_bart_base",
    "trainer_overhead",
    "eval_memory",
    "time_to_quality",
)


def run_external(name: str, profile: Profile) -> dict:
    """Call another engineer's benchmark through its own entry point (today only padding_efficiency)."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as err:
        return {"skipped": f"bench/{name}.py is not there yet ({err})"}
    quick = profile.name != "full"
    data = module.DEFAULT_DATA
    if not data.is_file():
        return {"skipped": f"needs the plain Multi30k train.jsonl at {data}"}
    report = module.run(data, batch_size=64, epochs=1 if quick else 3, vocab_size=8000, seed=0)
    title = "Padding efficiency of the samplers (Multi30k train)"
    return {"title": title, **report, "markdown": module.markdown(report)}


def run_suite(
    profile: Profile,
    *,
    only: list[str] | None = None,
    cache: Path = CACHE,
    command: str = "python -m bench",
    note: str | None = None,
    isolate: bool = True,
) -> dict:
    """Run the selected comparisons (all by default) and return the results dict (not yet written).

    With `isolate` each comparison runs in a fresh process (see bench/isolation.py); without, all of them run
    in this one, sharing the data (quicker to start, for the smoke test)."""
    started, load_before = time.perf_counter(), os.getloadavg()
    selected = [name for name in ORDER if not only or name in only]
    toolkits, missing = available_toolkits()
    results: dict = {"meta": {}, "peak": None, "comparisons": {}, "skipped": {}}
    for side, reason in missing.items():
        log(f"{side}: not available ({reason}); its cells stay empty")

    log(f"[peak] matmul {profile.peak_size}^3, {profile.peak_runs} runs per precision")
    results["peak"] = peak.run(size=profile.peak_size, runs=profile.peak_runs)
    log(
        f"  fp32 {results['peak']['fp32']['gflops']} GFLOP/s, bf16 {results['peak']['bf16']['gflops']} GFLOP/s"
    )
    precisions = native_precisions(profile.precisions)
    overhead_precisions = native_precisions(profile.overhead_precisions)
    if (precisions, overhead_precisions) != (profile.precisions, profile.overhead_precisions):
        log("  this CPU has no bf16 instructions: fp32 cells only (bf16 would time torch's emulation)")
        profile = dataclasses.replace(profile, precisions=precisions, overhead_precisions=overhead_precisions)

    data: BenchData | None = None
    for name in selected:
        section_started = time.perf_counter()
        if name in EXTERNAL:
            if profile.name == "smoke":
                results["skipped"][name] = "not run in the smoke profile"
                continue
            log(f"[{name}]")
            outcome = _guarded(lambda name=name: run_external(name, profile))
        else:
            if not toolkits:
                results["skipped"][name] = "neither toolkit is importable: " + "; ".join(missing.values())
                continue
            if isolate:
                log(f"[{name}] in a fresh process")
                outcome = _guarded(
                    lambda name=name: run_isolated(name, profile, cache=cache, peak=results["peak"])
                )
            else:
                if data is None and name not in SYNTHETIC:
                    data = _load_data(profile, cache)
                log(f"[{name}]")
                outcome = _guarded(
                    lambda name=name, data=data: _run_own(name, profile, data, toolkits, results["peak"])
                )
        outcome["seconds"] = round(time.perf_counter() - section_started, 1)
        log(f"  ({outcome['seconds']:.0f} s)")
        if "skipped" in outcome:
            results["skipped"][name] = outcome["skipped"]
            log(f"  skipped: {outcome['skipped']}")
        else:
            results["comparisons"][name] = outcome
    results["meta"] = _meta(profile, command=command, note=note, seconds=time.perf_counter() - started)
    results["meta"]["missing_toolkits"] = missing
    # 1-minute load averages: above ~0.5 per core, another job shared the CPU and the figures are low
    results["meta"]["load_average_before"] = load_before
    results["meta"]["load_average_after"] = os.getloadavg()
    return results


def _run_own(
    name: str, profile: Profile, data: BenchData | None, toolkits: dict[str, Toolkit], peak_result: dict
):
    return OWN[name](profile, data, toolkits, peak=peak_result)


def _load_data(profile: Profile, cache: Path) -> BenchData:
    log(f"[data] Multi30k, sentencepiece {profile.vocab_size} tokenizer (cached under {cache})")
    return load_bench_data(vocab_size=profile.vocab_size, train_examples=profile.train_examples, cache=cache)


def run_comparison(name: str, profile: Profile, *, cache: Path, peak: dict | None) -> dict:
    """One comparison of this package from scratch: the toolkits, the data it needs, then its `run`."""
    toolkits, _ = available_toolkits()
    data = None if name in SYNTHETIC else _load_data(profile, cache)
    return _run_own(name, profile, data, toolkits, peak)


def _guarded(run: Callable[[], dict]) -> dict:
    """A failing comparison is recorded with its error; the others still run."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 - reported in the results, with the traceback on stderr
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"}


def _meta(profile: Profile, *, command: str, note: str | None, seconds: float) -> dict:
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    return {
        "command": command,
        "profile": profile.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers_version,
        "python": platform.python_version(),
        "total_minutes": seconds / 60,
        "note": note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a < 5 minute run (fewer steps, reps, examples)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="run sizes (overrides --quick)")
    parser.add_argument(
        "--only", nargs="+", choices=ORDER, metavar="NAME", help=f"run only these: {', '.join(ORDER)}"
    )
    parser.add_argument("--output-dir", type=Path, default=REPO / "bench", help="where results.json/.md go")
    parser.add_argument("--cache", type=Path, default=CACHE, help="tokenizer cache (default bench/results/)")
    parser.add_argument("--note", help="a remark printed above the tables, e.g. 'measured on a busy machine'")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every comparison in this process (quicker to start; what one comparison leaves behind can "
        "slow the next, see bench/isolation.py)",
    )
    args = parser.parse_args(argv)

    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_suite(
        profile,
        only=args.only,
        cache=args.cache,
        command=command.strip(),
        note=args.note,
        isolate=not args.in_process,
    )
    json_path, markdown_path = args.output_dir / "results.json", args.output_dir / "results.md"
    if args.only and json_path.is_file():  # a partial run updates its comparisons, keeps the others
        results = merge(json.loads(json_path.read_text(encoding="utf-8")), results)
    write(results, json_path=json_path, markdown_path=markdown_path)
    log(f"wrote {json_path} and {markdown_path} in {results['meta']['total_minutes']:.1f} minutes")
    failed = [name for name, result in results["comparisons"].items() if "error" in result]
    if failed:
        log(f"failed: {', '.join(failed)} (see results.json)")
    log(
        json.dumps(
            {
                name: r.get("rows") and {k: v.get("ratio") for k, v in r["rows"].items()}
                for name, r in results["comparisons"].items()
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
