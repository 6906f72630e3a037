"""Comparison 2: evaluation with `predict_with_generate` (beam search), sequences/s, ours against theirs.

`Seq2SeqTrainer.evaluate` over the first `eval_examples` Multi30k validation sentences, `num_beams` beams,
fp32 and bf16 autocast, with a `compute_metrics` that decodes and scores BLEU (the same function on both
sides). The models have random weights, so every generation is forced to exactly `eval_new_tokens` new
tokens (`min_new_tokens = max_new_tokens`): both sides do the same decoding work, whatever their weights
say. The timed span is the whole `evaluate()` call, as a user waits for it (Hugging Face also runs a
teacher-forced forward pass per batch for the eval loss; ours computes the loss in the same pass when it can).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import Profile, Stopwatch, alternate, compare, log
from bench.data import BenchData
from bench.models import build_bart, build_ours
from bench.toolkits import Toolkit, with_seq2seq
from metrics import bleu

GOALS = {"bf16": 3.0}


def bleu_metric(tokenizer, references: list[str]) -> Callable:
    """compute_metrics for either trainer: decode generated ids (pad, or -100 from Hugging Face's padding
    across batches, become pad) and score corpus BLEU against the raw references, in dataset order."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = eval_prediction[0]
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        ids = np.where(np.asarray(predictions) < 0, tokenizer.pad_token_id, predictions)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        return {"bleu": bleu(texts, references[: len(texts)])["bleu"]}

    return compute_metrics


def run(
    profile: Profile, data: BenchData, toolkits: dict[str, Toolkit], *, peak: dict | None = None, log_fn=log
) -> dict:
    toolkits = with_seq2seq(toolkits)  # Seq2SeqTrainer on both sides
    split = data.validation.head(profile.eval_examples)
    references = [target for _, target in split.pairs]
    new_tokens, beams = profile.eval_new_tokens, profile.num_beams
    gen_kwargs = {"num_beams": beams, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    builders = {"ours": build_ours, "theirs": build_bart}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as scratch:
        for precision in profile.precisions:
            log_fn(f"  {precision}")
            runners = {}
            for side in ("ours", "theirs"):
                toolkit = toolkits.get(side)
                if toolkit is None:
                    runners[side] = None
                    continue
                model = builders[side](profile.model, vocab_size=data.tokenizer.vocab_size)
                args = toolkit.arguments(
                    Path(scratch) / side,
                    seq2seq=True,
                    precision=precision,
                    predict_with_generate=True,
                    per_device_eval_batch_size=profile.eval_batch_size,
                )
                trainer = toolkit.Seq2SeqTrainer(
                    model=model,
                    args=args,
                    eval_dataset=split.features,
                    data_collator=toolkit.DataCollatorForSeq2Seq(data.tokenizer, label_pad_token_id=-100),
                    compute_metrics=bleu_metric(data.tokenizer, references),
                )
                runners[side] = _evaluator(trainer, len(split), gen_kwargs)
            runs = alternate(runners, profile.repetitions, log=log_fn)
            rows[precision] = compare(
                runs.get("ours"), runs.get("theirs"), unit="sequences/s", goal=GOALS.get(precision)
            )
    return {
        "title": f"Evaluation with predict_with_generate ({beams} beams): Seq2SeqTrainer.evaluate, sequences/s",
        "setup": {
            "examples": len(split),
            "eval_batch_size": profile.eval_batch_size,
            "num_beams": beams,
            "new_tokens (forced)": new_tokens,
            "model": profile.model,
            "repetitions": profile.repetitions,
        },
        "rows": rows,
    }


def _evaluator(trainer, examples: int, gen_kwargs: dict) -> Callable[[], dict[str, float]]:
    def evaluate() -> dict[str, float]:
        with Stopwatch() as watch:
            metrics = trainer.evaluate(**gen_kwargs)
        return {"value": examples / watch.seconds, "seconds": watch.seconds, "bleu": metrics.get("eval_bleu")}

    return evaluate
