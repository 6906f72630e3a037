"""Comparison 1: training throughput (target tokens/s) of s2s.Seq2SeqTrainer + our Transformer against
transformers.Seq2SeqTrainer + BART of the same size, fp32 and bf16 autocast.

- identical batches: both trainers get the very same padded batches (pre-collated, loaded with batch size 1),
  so the figure compares trainer + model efficiency;
- best batching: each toolkit's own length-aware batching on the whole training set: ours a token budget
  (`max_tokens_per_batch`, chosen so a batch holds `batch_size` sentences on average), theirs
  `group_by_length` with `batch_size` sentences.

Each repetition trains a fresh trainer for `warmup_steps + train_steps` optimizer steps and times the last
`train_steps` with a callback (set-up and warm-up excluded). Tokens are the real (non-pad) target tokens of
the timed batches, counted as they are collated. MFU is the matmul FLOPs of those tokens per second over the
measured matmul peak of the same precision (`bench.peak`).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import Profile, alternate, compare, log
from bench.data import BenchData, TokenCounter, fixed_batches, unwrap_batch
from bench.models import build_bart, build_ours, training_flops
from bench.toolkits import Toolkit, step_timer, with_seq2seq

GOALS = {"bf16 identical batches": 2.0, "bf16 best batching": 3.0}


def train_window(
    toolkit: Toolkit,
    model: torch.nn.Module,
    *,
    dataset: Any,
    collator: Callable,
    precision: str,
    warmup_steps: int,
    train_steps: int,
    seq2seq: bool = True,
    size: dict[str, int],
    vocab_size: int,
    peak_gflops: float | None,
    **overrides: Any,
) -> dict[str, float]:
    """Train `warmup_steps + train_steps` steps with a fresh trainer; time and count the last `train_steps`.

    Returns `value` (target tokens/s), `seconds`, `target_tokens`, `source_tokens` and `mfu` (None without
    a peak)."""
    counter = TokenCounter(collator)
    timer = step_timer(toolkit, start_step=warmup_steps, end_step=warmup_steps + train_steps)
    trainer_cls = toolkit.Seq2SeqTrainer if seq2seq else toolkit.Trainer
    with tempfile.TemporaryDirectory(prefix=f"bench-{toolkit.side}-") as output_dir:
        args = toolkit.arguments(
            Path(output_dir),
            seq2seq=seq2seq,
            precision=precision,
            max_steps=warmup_steps + train_steps,
            **overrides,
        )
        trainer = trainer_cls(
            model=model, args=args, train_dataset=dataset, data_collator=counter, callbacks=[timer]
        )
        trainer.train()
    if timer.seconds is None:
        raise RuntimeError(
            f"{toolkit.side}: training stopped before step {warmup_steps + train_steps}; "
            f"the dataset has too few batches for warmup_steps + train_steps"
        )
    source = sum(counter.source[warmup_steps : warmup_steps + train_steps])
    target = sum(counter.target[warmup_steps : warmup_steps + train_steps])
    flops = training_flops(size, vocab_size=vocab_size, source_tokens=source, target_tokens=target)
    return {
        "value": target / timer.seconds,
        "seconds": timer.seconds,
        "target_tokens": float(target),
        "source_tokens": float(source),
        "mfu": flops / timer.seconds / (peak_gflops * 1e9) if peak_gflops else None,
    }


def token_budget(features: list[dict[str, list[int]]], batch_size: int) -> int:
    """The `max_tokens_per_batch` whose mean batch holds about `batch_size` examples (as the samplers
    benchmark chooses it), so both sides' best batching have the same mean batch size."""
    from bench.padding_efficiency import budget_for_mean_batch

    lengths = np.array([[len(f["input_ids"]), len(f["labels"])] for f in features], dtype=np.int64)
    return budget_for_mean_batch(lengths, batch_size)


def run(
    profile: Profile,
    data: BenchData,
    toolkits: dict[str, Toolkit],
    *,
    peak: dict | None = None,
    log_fn: Callable[[str], None] = log,
) -> dict:
    toolkits = with_seq2seq(toolkits)  # Seq2SeqTrainer on both sides
    size, vocab = profile.model, data.tokenizer.vocab_size
    steps, warmup = profile.train_steps, profile.warmup_steps
    batches = fixed_batches(
        data.train.features, batch_size=profile.batch_size, count=warmup + steps, seed=0
    )  # one list, shared: both sides train on exactly these batches
    max_tokens = token_budget(data.train.features, profile.batch_size)
    builders = {"ours": build_ours, "theirs": build_bart}
    rows: dict[str, dict] = {}
    for precision in profile.precisions:
        peak_gflops = (peak or {}).get(precision, {}).get("gflops")
        models = {side: builders[side](size, vocab_size=vocab) for side in toolkits}
        common = {
            "precision": precision,
            "warmup_steps": warmup,
            "train_steps": steps,
            "size": size,
            "vocab_size": vocab,
            "peak_gflops": peak_gflops,
        }
        for mode in ("identical batches", "best batching"):
            name = f"{precision} {mode}"
            log_fn(f"  {name}")
            runners = {}
            for side in ("ours", "theirs"):
                toolkit = toolkits.get(side)
                if toolkit is None:
                    runners[side] = None
                elif mode == "identical batches":
                    runners[side] = functools.partial(
                        train_window,
                        toolkit,
                        models[side],
                        dataset=batches,
                        collator=unwrap_batch,
                        per_device_train_batch_size=1,
                        **common,
                    )
                else:
                    batching = (
                        {"max_tokens_per_batch": max_tokens}
                        if side == "ours"
                        else {"group_by_length": True, "per_device_train_batch_size": profile.batch_size}
                    )
                    runners[side] = functools.partial(
                        train_window,
                        toolkit,
                        models[side],
                        dataset=data.train.features,
                        collator=toolkit.DataCollatorForSeq2Seq(data.tokenizer, label_pad_token_id=-100),
                        **batching,
                        **common,
                    )
            runs = alternate(runners, profile.repetitions, log=log_fn)
            rows[name] = compare(
                runs.get("ours"), runs.get("theirs"), unit="target tokens/s", goal=GOALS.get(name)
            )
    return {
        "title": "Training throughput: Seq2SeqTrainer + our Transformer vs transformers Seq2SeqTrainer + BART",
        "setup": {
            "model": size,
            "vocab_size": vocab,
            "batch_size": profile.batch_size,
            "max_tokens_per_batch (ours, best batching)": max_tokens,
            "train_steps": steps,
            "warmup_steps": warmup,
            "repetitions": profile.repetitions,
            "optimizer": "adamw_torch_fused, lr 5e-4, clip 1.0 (both)",
        },
        "rows": rows,
    }
