"""Comparison 6: time to quality. Each toolkit trains its model (same size, same tokenizer, same
hyper-parameters) on Multi30k train for the same wall-clock budget, then translates Multi30k test2016 with
4 beams (`quality_beams`); sacreBLEU (`metrics.bleu`) against the raw references.

Each side uses its best settings: bf16 autocast and its own length-aware batching (ours a token budget,
theirs `group_by_length`), label smoothing 0.1 (with `decoder_input_ids` from each toolkit's collator, as
both document for label smoothing), AdamW lr 1e-3 with a constant schedule after a linear warm-up (the
budget, not a step count, ends training, so a decaying schedule would favour whichever guessed the steps
right). The budget is measured from `on_train_begin`; translating the test set is not counted.
Predictions are made by a fresh trainer without `group_by_length`, so both come back in dataset order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.common import Profile, Stopwatch, log
from bench.data import BenchData, TokenCounter
from bench.models import build_bart, build_ours
from bench.toolkits import Toolkit, wall_clock_limit, with_seq2seq
from bench.trainer_throughput import token_budget
from metrics import bleu

PRECISION = "bf16"


def train_and_score(
    toolkit: Toolkit, profile: Profile, data: BenchData, *, scratch: Path, max_tokens: int
) -> dict:
    side = toolkit.side
    model = (build_ours if side == "ours" else build_bart)(
        profile.model, vocab_size=data.tokenizer.vocab_size
    )
    counter = TokenCounter(
        toolkit.DataCollatorForSeq2Seq(data.tokenizer, model=model, label_pad_token_id=-100)
    )
    limit = wall_clock_limit(toolkit, seconds=profile.quality_seconds)
    batching = (
        {"max_tokens_per_batch": max_tokens}
        if side == "ours"
        else {"group_by_length": True, "per_device_train_batch_size": profile.batch_size}
    )
    args = toolkit.arguments(
        scratch / f"{side}-train",
        seq2seq=True,
        precision=PRECISION,
        learning_rate=1e-3,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=max(1, min(200, int(profile.quality_seconds))),
        label_smoothing_factor=0.1,
        max_steps=10**7,
        **batching,
    )
    trainer = toolkit.Seq2SeqTrainer(
        model=model, args=args, train_dataset=data.train.features, data_collator=counter, callbacks=[limit]
    )
    with Stopwatch() as train_watch:
        trainer.train()

    test = data.test.head(profile.quality_test_examples)
    predict_args = toolkit.arguments(
        scratch / f"{side}-predict",
        seq2seq=True,
        precision=PRECISION,
        predict_with_generate=True,
        per_device_eval_batch_size=profile.quality_batch_size,
    )
    predictor = toolkit.Seq2SeqTrainer(
        model=model,
        args=predict_args,
        data_collator=toolkit.DataCollatorForSeq2Seq(data.tokenizer, label_pad_token_id=-100),
    )
    with Stopwatch() as predict_watch:
        output = predictor.predict(
            test.features, num_beams=profile.quality_beams, max_new_tokens=profile.quality_new_tokens
        )
    predictions = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    ids = np.where(np.asarray(predictions) < 0, data.tokenizer.pad_token_id, predictions)
    hypotheses = data.tokenizer.batch_decode(ids, skip_special_tokens=True)
    score = bleu(hypotheses, [target for _, target in test.pairs])
    steps = limit.steps
    return {
        "value": score["bleu"],
        "train_seconds": limit.elapsed,
        "train_call_seconds": train_watch.seconds,
        "steps": float(steps),
        "target_tokens_trained": float(sum(counter.target[:steps])),
        "predict_seconds": predict_watch.seconds,
        "example": hypotheses[0] if hypotheses else "",
    }


def run(
    profile: Profile, data: BenchData, toolkits: dict[str, Toolkit], *, peak: dict | None = None, log_fn=log
) -> dict:
    toolkits = with_seq2seq(toolkits)  # Seq2SeqTrainer on both sides
    max_tokens = token_budget(data.train.features, profile.batch_size)
    measured = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        for side in ("ours", "theirs"):  # one run each: a run is the whole budget
            if side in toolkits:
                log_fn(f"  {side}: training for {profile.quality_seconds:g} s")
                measured[side] = train_and_score(
                    toolkits[side], profile, data, scratch=Path(scratch), max_tokens=max_tokens
                )
                log_fn(
                    f"    BLEU {measured[side]['value']:.2f} after {measured[side]['steps']:.0f} steps; "
                    f"e.g. {measured[side]['example']!r}"
                )
    ours, theirs = measured.get("ours"), measured.get("theirs")
    row = {
        "unit": "test2016 BLEU",
        "ours": ours and ours["value"],
        "theirs": theirs and theirs["value"],
        "ratio": None,  # a ratio of BLEU scores near 0 means nothing; the difference is the figure
        "difference": ours["value"] - theirs["value"] if ours and theirs else None,
        **{f"{k}_{side}": v for side, m in measured.items() for k, v in m.items() if k != "value"},
    }
    return {
        "title": f"Time to quality: Multi30k test2016 BLEU after {profile.quality_seconds:g} s of training",
        "setup": {
            "model": profile.model,
            "vocab_size": data.tokenizer.vocab_size,
            "precision": PRECISION,
            "batching": f"ours max_tokens_per_batch={max_tokens}; theirs group_by_length, batch {profile.batch_size}",
            "test sentences": len(data.test.head(profile.quality_test_examples)),
            "decoding": f"{profile.quality_beams} beams, max_new_tokens {profile.quality_new_tokens}",
        },
        "rows": {f"{profile.quality_seconds:g} s budget": row},
    }
