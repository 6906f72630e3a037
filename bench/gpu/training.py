"""Training throughput on the device: our `Seq2SeqTrainer` + Transformer against Hugging Face's
`Seq2SeqTrainer` + BART of the same size, bf16 autocast, target tokens per second.

Batching is each toolkit's own length-aware one over the same synthetic WMT-like pairs: ours a token budget
(`max_tokens_per_batch`), theirs length grouping (`group_by_length`, in transformers 5
`train_sampling_strategy="group_by_length"`) with the batch size in sentences that gives the same mean
batch. Both collate with the same padding function, use fused AdamW, clip at 1.0, and never log, save or
evaluate. Each run is a fresh trainer; the first `warmup_steps` updates are left out and the next
`train_steps` are timed with the device synchronised at both ends. Tokens are the real (non-pad) target
tokens of the timed batches, counted as they are collated. MFU: matmul FLOPs of those tokens
(`bench.models.training_flops`) per second over the measured bf16 peak.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import compare
from bench.data import TokenCounter, pad_batch
from bench.gpu.data import translation_pairs
from bench.gpu.harness import log
from bench.gpu.models import build
from bench.gpu.settings import Settings
from bench.models import training_flops
from bench.toolkits import SHARED_SETTINGS, load_toolkit, step_timer

SHARED = {"bf16": True, **SHARED_SETTINGS}


def arguments(cls: type, *, strict: bool, **settings: Any) -> tuple[Any, list[str]]:
    """`cls(**settings)`; names `cls` does not have are dropped and returned when not `strict` (Hugging
    Face's arguments differ between 4.x and 5.x), an error when `strict` (ours: a bug here)."""
    known = {f.name for f in dataclasses.fields(cls)}
    dropped = sorted(set(settings) - known)
    if dropped and strict:
        raise TypeError(f"{cls.__name__} has no {dropped}")
    return cls(**{k: v for k, v in settings.items() if k in known}), dropped


def length_grouping(cls: type) -> dict[str, Any]:
    """Hugging Face's length-grouped sampling under the name this transformers version uses."""
    names = {f.name for f in dataclasses.fields(cls)}
    if "group_by_length" in names:
        return {"group_by_length": True}
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length"}
    raise RuntimeError(f"{cls.__name__} has neither group_by_length nor train_sampling_strategy")


def mean_budget_batch(examples: list[dict[str, list[int]]], max_tokens: int) -> float:
    """Mean sentences per batch of our token-budget sampler over `examples`."""
    from samplers import TokenBudgetBatchSampler

    lengths = np.array([[len(e["input_ids"]), len(e["labels"])] for e in examples], dtype=np.int64)
    return len(examples) / len(TokenBudgetBatchSampler(lengths, max_tokens, seed=0))


def train_once(
    side: str,
    examples: list[dict[str, list[int]]],
    settings: Settings,
    device: torch.device,
    *,
    batching: dict[str, Any],
    peak_tflops: float | None,
) -> dict[str, Any]:
    """One fresh trainer of `side`: `warmup_steps` untimed updates, then `train_steps` timed ones."""
    toolkit = load_toolkit(side)
    cuda = device.type == "cuda"
    synchronize = torch.cuda.synchronize if cuda else None
    model = build(side, settings.model, vocab_size=settings.vocab_size)
    counter = TokenCounter(pad_batch)
    warmup, steps = settings.warmup_steps, settings.train_steps
    timer = step_timer(toolkit, start_step=warmup, end_step=warmup + steps, synchronize=synchronize)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix=f"bench-gpu-{side}-") as output_dir:
        args, dropped = arguments(
            toolkit.Seq2SeqTrainingArguments,
            strict=side == "ours",
            output_dir=str(Path(output_dir)),
            use_cpu=not cuda,
            dataloader_pin_memory=cuda,
            max_steps=warmup + steps,
            **SHARED,
            **batching,
        )
        trainer = toolkit.Seq2SeqTrainer(
            model=model, args=args, train_dataset=examples, data_collator=counter, callbacks=[timer]
        )
        trainer.train()
    if timer.seconds is None:
        raise RuntimeError(f"{side}: training stopped before step {warmup + steps} (too few batches)")
    source = sum(counter.source[warmup : warmup + steps])
    target = sum(counter.target[warmup : warmup + steps])
    flops = training_flops(
        settings.model, vocab_size=settings.vocab_size, source_tokens=source, target_tokens=target
    )
    result = {
        "value": target / timer.seconds,
        "seconds": timer.seconds,
        "target_tokens": float(target),
        "source_tokens": float(source),
        "mfu": flops / timer.seconds / (peak_tflops * 1e12) if peak_tflops else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }
    if dropped:
        result["arguments_dropped"] = dropped
    del trainer, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def run(settings: Settings, device: torch.device, *, peak: dict, partial: dict) -> dict:
    import transformers

    examples = translation_pairs(settings.train_examples, vocab_size=settings.vocab_size, seed=0)
    budget = settings.max_tokens_per_batch
    hf_batch = max(1, round(mean_budget_batch(examples, budget)))
    hf_args = load_toolkit("theirs").Seq2SeqTrainingArguments
    batching = {
        "ours": {"max_tokens_per_batch": budget},
        "theirs": {"per_device_train_batch_size": hf_batch, **length_grouping(hf_args)},
    }
    peak_tflops = (peak.get("bf16") or {}).get("tflops")
    partial["setup"] = {
        "model": settings.model,
        "vocab_size": settings.vocab_size,
        "examples": len(examples),
        "mean_source_tokens": float(np.mean([len(e["input_ids"]) for e in examples])),
        "mean_target_tokens": float(np.mean([len(e["labels"]) for e in examples])),
        "batching": batching,
        "warmup_steps": settings.warmup_steps,
        "train_steps": settings.train_steps,
        "repetitions": settings.repetitions,
        "precision": "bf16 autocast",
        "optimizer": "adamw_torch_fused, lr 5e-4, clip 1.0 (both)",
        "transformers": transformers.__version__,
        "bf16_peak_tflops": peak_tflops,
    }
    runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
    errors: dict[str, str] = {}
    partial["runs"], partial["errors"] = runs, errors
    for repetition in range(settings.repetitions):
        for side in ("ours", "theirs"):
            if side in errors:
                continue
            started = time.perf_counter()
            try:
                measured = train_once(
                    side, examples, settings, device, batching=batching[side], peak_tflops=peak_tflops
                )
            except Exception as err:  # noqa: BLE001 - one side failing still leaves the other's figures
                errors[side] = "".join(traceback.format_exception(err))
                log(f"  training {side}: FAILED ({type(err).__name__}: {err})")
                continue
            runs[side].append(measured)
            log(
                f"  training rep {repetition + 1} {side}: {measured['value']:,.0f} target tokens/s, "
                f"MFU {_percent(measured['mfu'])} ({time.perf_counter() - started:.1f} s with set-up)"
            )
    row = compare(runs["ours"], runs["theirs"], unit="target tokens/s")
    partial["rows"] = {"bf16 train (token budget vs group_by_length)": row}
    return partial


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
