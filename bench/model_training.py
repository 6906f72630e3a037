"""Training throughput of the model alone (issue 4): ours against Hugging Face BART of the same size, bare loop.

No trainer, no data loading: the same random batches (64 pairs of 32 source and 32 target tokens, vocab 8000)
go through forward (each model's own mean loss), backward and a fused AdamW step (lr 5e-4, no clipping), in
fp32 and with the forward under bf16 autocast. Both models: d_model 256, 3+3 layers, 4 heads, ffn 1024, gelu,
dropout 0.1. The sides run alternately (A B A B ...), each repetition timing `bare_steps` steps after two
untimed warm-up steps per precision; the ratio is the median of the per-repetition ratios. MFU: matmul
FLOPs of the tokens (`bench.models.training_flops`) per second over the measured peak of the precision.

    python -m bench.model_training [--quick] [--threads 1] [--output bench/results/model_training.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import CACHE, PROFILES, Profile, Stopwatch, alternate, compare, log
from bench.models import build_bart, build_ours, training_flops

RESULTS = CACHE / "model_training.json"
LEARNING_RATE = 5e-4


def make_batches(count: int, *, batch_size: int, src_len: int, tgt_len: int, vocab_size: int) -> list[dict]:
    """`count` batches of random ids above the special ids, unpadded; labels end nowhere in particular."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        ids = torch.randint(4, vocab_size, (batch_size, src_len), generator=g)
        labels = torch.randint(4, vocab_size, (batch_size, tgt_len), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


def train_steps(model: torch.nn.Module, optimizer, batches: list[dict], *, bf16: bool) -> int:
    """One optimizer step per batch; returns the number of target tokens trained on."""
    tokens = 0
    for batch in batches:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int((batch["labels"] != -100).sum())
    return tokens


def run(
    profile: Profile,
    data=None,
    toolkits: dict | None = None,
    *,
    peak: dict | None = None,
    log_fn: Callable[[str], None] = log,
) -> dict:
    """Time both models' bare training steps per precision; one result row per precision.

    `data` is not used (random batches; the argument keeps the suite's signature); `toolkits` says which
    sides are available ("ours", "theirs"; None: both)."""
    sides = [side for side in ("ours", "theirs") if toolkits is None or side in toolkits]
    size, vocab, length = profile.model, profile.vocab_size, profile.bare_length
    batches = make_batches(
        profile.bare_steps, batch_size=profile.batch_size, src_len=length, tgt_len=length, vocab_size=vocab
    )
    builders = {
        "ours": lambda: build_ours(size, vocab_size=vocab, activation="gelu"),
        "theirs": lambda: build_bart(size, vocab_size=vocab),
    }
    rows = {}
    for precision in profile.precisions:
        bf16 = precision == "bf16"
        peak_gflops = (peak or {}).get(precision, {}).get("gflops")
        runners: dict[str, Callable[[], dict] | None] = {side: None for side in ("ours", "theirs")}
        for side in sides:
            model = builders[side]().train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, fused=True)
            train_steps(model, optimizer, batches[:2], bf16=bf16)  # warm-up: kernels, optimizer state
            runners[side] = _runner(
                model, optimizer, batches, bf16=bf16, size=size, vocab=vocab, peak=peak_gflops
            )
        log_fn(f"  {precision}")
        runs = alternate(runners, profile.repetitions, log=log_fn)
        rows[precision] = compare(runs.get("ours"), runs.get("theirs"), unit="target tokens/s")
    return {
        "title": "Model training alone (bare loop, no trainer): our Transformer vs BART, target tokens/s",
        "setup": {
            "model": {**size, "activation": "gelu"},
            "vocab_size": vocab,
            "batch_size": profile.batch_size,
            "source/target length": length,
            "timed steps per repetition": profile.bare_steps,
            "repetitions": profile.repetitions,
            "optimizer": f"AdamW fused, lr {LEARNING_RATE:g}, no clipping (both)",
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
    }


def _runner(model, optimizer, batches, *, bf16: bool, size: dict, vocab: int, peak: float | None) -> Callable:
    source_tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def run_steps() -> dict[str, float | None]:
        with Stopwatch() as watch:
            target_tokens = train_steps(model, optimizer, batches, bf16=bf16)
        flops = training_flops(
            size, vocab_size=vocab, source_tokens=source_tokens, target_tokens=target_tokens
        )
        return {
            "value": target_tokens / watch.seconds,
            "seconds": watch.seconds,
            "mfu": flops / watch.seconds / (peak * 1e9) if peak else None,
        }

    return run_steps


def main(argv: list[str] | None = None) -> None:
    from bench import peak as peak_module
    from bench.report import comparison_table

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the quick profile: 4 steps, 2 repetitions")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per repetition (default 10)")
    parser.add_argument("--repetitions", type=int, help="A B pairs per precision (default 3)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("steps", "repetitions"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    profile = PROFILES["quick" if args.quick else "full"]
    overrides = {"bare_steps": args.steps, "repetitions": args.repetitions}
    overrides["precisions"] = tuple(args.precisions) if args.precisions else None
    profile = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})

    load_before = os.getloadavg()
    measured_peak = peak_module.run(size=profile.peak_size, runs=profile.peak_runs)
    result = run(profile, peak=measured_peak)
    command = "python -m bench.model_training " + " ".join(argv if argv is not None else sys.argv[1:])
    result |= {
        "command": command.strip(),
        "peak": measured_peak,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print("\n".join(comparison_table(result)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
