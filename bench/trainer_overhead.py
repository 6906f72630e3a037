"""Comparison 4: the trainer's own overhead. Our `s2s.Trainer` and Hugging Face's `Trainer` both train the same
Hugging Face BART (identical initial weights) on the same pre-collated batches, so the model and the data are
equal and only the training loop differs: target tokens/s and milliseconds per optimizer step.
"""

from __future__ import annotations

from bench.common import Profile, alternate, compare, log
from bench.data import BenchData, fixed_batches, unwrap_batch
from bench.models import build_bart
from bench.toolkits import Toolkit
from bench.trainer_throughput import train_window


def run(
    profile: Profile, data: BenchData, toolkits: dict[str, Toolkit], *, peak: dict | None = None, log_fn=log
) -> dict:
    vocab = data.tokenizer.vocab_size
    steps, warmup = profile.train_steps, profile.warmup_steps
    batches = fixed_batches(data.train.features, batch_size=profile.batch_size, count=warmup + steps, seed=1)
    rows = {}
    for precision in profile.overhead_precisions:
        log_fn(f"  {precision}")
        peak_gflops = (peak or {}).get(precision, {}).get("gflops")
        runners = {}
        for side in ("ours", "theirs"):
            toolkit = toolkits.get(side)
            if toolkit is None:
                runners[side] = None
                continue
            model = build_bart(profile.model, vocab_size=vocab, seed=0)  # same weights on both sides

            def runner(toolkit=toolkit, model=model, precision=precision, peak_gflops=peak_gflops):
                measured = train_window(
                    toolkit,
                    model,
                    dataset=batches,
                    collator=unwrap_batch,
                    precision=precision,
                    warmup_steps=warmup,
                    train_steps=steps,
                    seq2seq=False,
                    size=profile.model,
                    vocab_size=vocab,
                    peak_gflops=peak_gflops,
                    per_device_train_batch_size=1,
                )
                measured["ms_per_step"] = 1000 * measured["seconds"] / steps
                return measured

            runners[side] = runner
        runs = alternate(runners, profile.repetitions, log=log_fn)
        rows[precision] = compare(runs.get("ours"), runs.get("theirs"), unit="target tokens/s")
    return {
        "title": "Trainer overhead: s2s.Trainer vs transformers.Trainer, both training the same BART",
        "setup": {
            "model": f"BartForConditionalGeneration {profile.model}, vocab {vocab}",
            "batch_size": profile.batch_size,
            "train_steps": steps,
            "warmup_steps": warmup,
            "repetitions": profile.repetitions,
        },
        "rows": rows,
    }
