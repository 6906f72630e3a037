"""Training throughput of the model alone: ours against Hugging Face BART of the same size, in a bare loop.

No trainer, no data loading: the same random batches (64 pairs, 32 source and 32 target tokens, vocab 8000)
go through forward (with the model's own loss), backward and an AdamW step, in fp32 and with the forward under
bf16 autocast. Both models: d_model 256, 3+3 layers, 4 heads, ffn 1024, gelu, dropout 0.1. The sides run
alternately (A B A B ...) and the reported ratio is the median of the per-pair ratios.

    python -m bench.model_training [--quick] [--output bench/results/model_training.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bench.generation import VOCAB, build_bart, build_ours

RESULTS = Path(__file__).resolve().parent / "results" / "model_training.json"


def make_batches(count: int, *, batch_size: int, src_len: int, tgt_len: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(4, VOCAB, (batch_size, src_len), generator=g)
        labels = torch.randint(4, VOCAB, (batch_size, tgt_len), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


def train_steps(model, optimizer, batches: list[dict], *, bf16: bool) -> int:
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


def measure(args: argparse.Namespace) -> dict:
    models = {"ours": build_ours().train(), "hf": build_bart().train()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    batches = make_batches(
        args.steps, batch_size=args.batch_size, src_len=args.source_length, tgt_len=args.target_length
    )
    cells = []
    for precision in args.precisions:
        bf16 = precision == "bf16"
        for name in models:  # warm-up
            train_steps(models[name], optimizers[name], batches[:2], bf16=bf16)
        rates: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(args.repetitions):
            for name in ("ours", "hf"):
                started = time.perf_counter()
                tokens = train_steps(models[name], optimizers[name], batches, bf16=bf16)
                rates[name].append(tokens / (time.perf_counter() - started))
        ratios = [a / b for a, b in zip(rates["ours"], rates["hf"])]
        cell = {
            "precision": precision,
            "ours_target_tokens_per_s": [round(r) for r in rates["ours"]],
            "hf_target_tokens_per_s": [round(r) for r in rates["hf"]],
            "ours_median": round(statistics.median(rates["ours"])),
            "hf_median": round(statistics.median(rates["hf"])),
            "median_ratio": round(statistics.median(ratios), 3),
        }
        cells.append(cell)
        print(
            f"{precision:5s} ours {cell['ours_median']:8d} tok/s  HF {cell['hf_median']:8d} tok/s  "
            f"ratio {cell['median_ratio']:.2f}x  (pairs: " + ", ".join(f"{r:.2f}" for r in ratios) + ")",
            flush=True,
        )
    return {
        "benchmark": "model_training",
        "command": "python -m bench.model_training" + (" --quick" if args.quick else ""),
        "setup": {
            "batch_size": args.batch_size,
            "source_length": args.source_length,
            "target_length": args.target_length,
            "steps_per_repetition": args.steps,
            "repetitions": args.repetitions,
            "optimizer": "AdamW lr 1e-4",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(),
        },
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 steps per repetition")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per repetition")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--source-length", type=int, default=32)
    parser.add_argument("--target-length", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps = min(args.steps, 4)
    result = measure(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
