"""Comparison 5: peak memory (RSS) of an evaluation that keeps logits, with and without
`preprocess_logits_for_metrics` (argmax), ours (s2s.Trainer + our Transformer) against theirs
(transformers.Trainer + BART), each in a fresh subprocess.

The evaluation runs teacher-forced over `memory_examples` Multi30k training pairs (targets cut to
`memory_target_length` tokens) with a `memory_vocab_size` vocabulary (32k: the ids come from the 8k tokenizer,
the output layer is 32k wide, which is what fills memory) and a `compute_metrics` (token accuracy) that needs
the predictions, so both trainers must keep them. Without the argmax, the logits alone are examples x length x
vocabulary floats; the child's address space is capped (`memory_cap_gb`) so such a run fails alone instead of
starving a shared machine, and is reported as "> cap".

    python -m bench.eval_memory --child --side ours --preprocess argmax ...   (one measurement, prints JSON)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Profile, current_rss_mb, log, median, peak_rss_mb, run_json_subprocess
from bench.data import BenchData, encode, read_pairs
from bench.models import build_bart, build_ours
from bench.toolkits import Toolkit, load_toolkit

VARIANTS = ("argmax", "none")


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep the predicted ids only (Hugging Face passes a tuple whose first
    item is the logits)."""
    logits = logits[0] if isinstance(logits, tuple | list) else logits
    return logits.argmax(dim=-1)


def token_accuracy(eval_prediction) -> dict[str, float]:
    predictions, labels = eval_prediction[0], eval_prediction[1]
    predictions = predictions[0] if isinstance(predictions, tuple | list) else predictions
    predictions = np.asarray(predictions)
    if predictions.ndim == 3:  # raw logits: argmax here, after they were all kept
        predictions = predictions.argmax(-1)
    labels = np.asarray(labels)
    width = min(predictions.shape[1], labels.shape[1])
    mask = labels[:, :width] >= 0
    return {"token_accuracy": float((predictions[:, :width] == labels[:, :width])[mask].mean())}


def child(args: argparse.Namespace) -> dict:
    """One evaluation in this (fresh) process; returns peak RSS and the RSS before evaluating."""
    from s2s.tokenization import load_tokenizer

    toolkit: Toolkit = load_toolkit(args.side)
    tokenizer = load_tokenizer(args.tokenizer_dir)
    features = encode(tokenizer, read_pairs(args.data)[: args.examples])
    for feature in features:
        feature["labels"] = feature["labels"][: args.target_length]
    size = json.loads(args.model)
    model = (build_ours if args.side == "ours" else build_bart)(size, vocab_size=args.vocab_size)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as output_dir:
        trainer = toolkit.Trainer(
            model=model,
            args=toolkit.arguments(Path(output_dir), per_device_eval_batch_size=args.batch_size),
            eval_dataset=features,
            data_collator=toolkit.DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
            compute_metrics=token_accuracy,
            preprocess_logits_for_metrics=argmax_logits if args.preprocess == "argmax" else None,
        )
        before = current_rss_mb()
        started = time.perf_counter()
        metrics = trainer.evaluate()
        seconds = time.perf_counter() - started
    return {
        "value": max(peak_rss_mb(), current_rss_mb()),  # ru_maxrss can lag the current RSS a little
        "before_eval_mb": before,
        "seconds": seconds,
        "token_accuracy": metrics.get("eval_token_accuracy"),
    }


def run(
    profile: Profile, data: BenchData, toolkits: dict[str, Toolkit], *, peak: dict | None = None, log_fn=log
) -> dict:
    from bench.data import DATA

    n, length, vocab = profile.memory_examples, profile.memory_target_length, profile.memory_vocab_size
    logits_gb = n * length * vocab * 4 / 2**30
    rows = {}
    for variant in VARIANTS:
        label = (
            "with preprocess_logits_for_metrics (argmax)" if variant == "argmax" else "without (logits kept)"
        )
        log_fn(f"  {label}")
        measured: dict[str, list[dict]] = {}
        # Peak memory is deterministic: one fresh process per side (A then B) is enough.
        for side in ("ours", "theirs"):
            if side not in toolkits:
                continue
            args = [
                "--child",
                f"--side={side}",
                f"--preprocess={variant}",
                f"--examples={n}",
                f"--vocab-size={vocab}",
                f"--target-length={length}",
                f"--batch-size={profile.eval_batch_size}",
                f"--model={json.dumps(profile.model)}",
                f"--tokenizer-dir={data.tokenizer_dir}",
                f"--data={DATA / 'train.jsonl.gz'}",
            ]
            result = run_json_subprocess(
                "bench.eval_memory", args, timeout=1800, cap_gb=profile.memory_cap_gb
            )
            measured[side] = [result]
            shown = f"{result['value']:,.0f} MiB" if "value" in result else result["error"][-160:]
            log_fn(f"    {side}: {shown}")
        rows[label] = _row(measured, cap_gb=profile.memory_cap_gb)
    growth = [
        f"- {label}: ours +{_growth(row, 'ours')} MiB, Hugging Face +{_growth(row, 'theirs')} MiB"
        for label, row in rows.items()
    ]
    return {
        "title": "Peak memory (RSS) of an evaluation, fresh process each, lower is better",
        "markdown": "\nGrowth of RSS during `evaluate()` (peak minus RSS before it; the rest is imports and the "
        "model):\n\n" + "\n".join(growth),
        "setup": {
            "examples": n,
            "vocab_size": vocab,
            "target_length (max)": length,
            "eval_batch_size": profile.eval_batch_size,
            "full logits size (GiB, float32, at most)": round(logits_gb, 2),
            "address-space cap per run (GiB)": profile.memory_cap_gb,
            "model": profile.model,
        },
        "notes": [
            "Ratio: Hugging Face peak / ours (above 1: we use less). A cell '> cap' means the run ran out of "
            "its capped address space (it would have needed more)."
        ],
        "rows": rows,
    }


def _growth(row: dict, side: str) -> str:
    peak, before = row.get(side), row.get(f"before_eval_mb_{side}")
    return f"{peak - before:,.0f}" if isinstance(peak, float) and before is not None else "-"


def _row(measured: dict[str, list[dict]], *, cap_gb: float) -> dict:
    """Median peak per side; a side whose runs hit the cap is reported as exceeding it (value None)."""
    row: dict = {"unit": "peak RSS MiB (lower is better)", "ours": None, "theirs": None, "ratio": None}
    for side in ("ours", "theirs"):
        runs = measured.get(side, [])
        values = [r["value"] for r in runs if "value" in r]
        row[side] = median(values)
        row[f"{side}_runs"] = values
        if runs and not values:
            row[f"{side}_error"] = runs[0]["error"]
            row[side] = f"> {cap_gb:g} GiB cap"
        if values:
            row[f"before_eval_mb_{side}"] = median([r["before_eval_mb"] for r in runs if "value" in r])
    if isinstance(row["ours"], float) and isinstance(row["theirs"], float):
        row["ratio"] = row["theirs"] / row["ours"]
    elif isinstance(row["ours"], float) and isinstance(row["theirs"], str):
        row["ratio_note"] = "theirs exceeded the cap"
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one peak-memory measurement (used by python -m bench)")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--side", choices=("ours", "theirs"), required=True)
    parser.add_argument("--preprocess", choices=VARIANTS, required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--target-length", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", required=True, help="JSON of d_model, layers, heads, ffn_dim")
    parser.add_argument("--tokenizer-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    print(json.dumps(child(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
