"""The trainer and its stages: build the `Seq2SeqTrainer` the arguments describe, then train, evaluate and
predict, each returning the metrics the job writes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

from recipes.arguments import DataArguments, Task, resume_value
from recipes.averaging import load_averaged_checkpoints
from recipes.callbacks import TimeBudgetCallback, TimeBudgetDecay, TimeBudgetProgressCallback

logger = logging.getLogger("recipes")

# Schedules that decay to an end: under a time budget they decay over the budget (TimeBudgetDecay).
_DECAYS_TO_MAX_STEPS = ("linear", "cosine", "cosine_with_restarts", "polynomial")


def build_trainer(
    model: Any,
    tokenizer: Any,
    training_args: Any,
    tokenized: Mapping[str, datasets.Dataset],
    *,
    data_args: DataArguments,
    task: Task,
) -> Any:
    from s2s import DataCollatorForSeq2Seq, Seq2SeqTrainer

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        data_collator=DataCollatorForSeq2Seq(
            tokenizer, model=model, pad_to_multiple_of=data_args.pad_to_multiple_of
        ),
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        tokenizer=tokenizer,
        compute_metrics=_compute_metrics(tokenizer, training_args, data_args, task),
    )
    if data_args.max_train_minutes is not None:
        _add_time_budget(trainer, data_args.max_train_minutes)
    return trainer


def _compute_metrics(tokenizer: Any, training_args: Any, data_args: DataArguments, task: Task) -> Any:
    from metrics import Seq2SeqMetrics

    if not training_args.predict_with_generate:
        logger.warning(
            "predict_with_generate is off: evaluation reports the loss only (BLEU/ROUGE need generated outputs)"
        )
        return None
    return Seq2SeqMetrics(
        tokenizer,
        metrics=tuple(data_args.metrics or ()),
        # rougeLsum scores sentence by sentence: split summaries into one sentence per line first
        sentence_per_line=task == "summarization",
    )


def _add_time_budget(trainer: Any, minutes: float) -> None:
    """Stop at the time budget; let a decaying schedule end with it; show the training bar as elapsed /
    budget instead of a step count the run will not reach (the trainer's step bar is replaced; with
    disable_tqdm there is no bar to replace)."""
    from s2s.callbacks import ProgressCallback

    budget = TimeBudgetCallback(minutes)
    trainer.add_callback(budget)
    if str(trainer.args.lr_scheduler_type) in _DECAYS_TO_MAX_STEPS:
        trainer.add_callback(TimeBudgetDecay(budget))
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(TimeBudgetProgressCallback(budget))


def train(
    trainer: Any, training_args: Any, *, train_size: int, average_last_checkpoints: int | None = None
) -> dict[str, float]:
    result = trainer.train(resume_from_checkpoint=resume_value(training_args.resume_from_checkpoint))
    metrics = dict(getattr(result, "metrics", None) or {})
    if average_last_checkpoints:
        metrics["averaged_checkpoints"] = len(load_averaged_checkpoints(trainer, average_last_checkpoints))
    trainer.save_model(training_args.output_dir)  # model, config, generation config, tokenizer
    metrics["train_samples"] = train_size
    return metrics


def _final_gen_kwargs(trainer: Any, data_args: DataArguments) -> dict[str, Any]:
    """Generation options of the final evaluation and prediction: `num_beams` beats `generation_num_beams`,
    which may be set low to keep evaluation during training cheap."""
    if not trainer.args.predict_with_generate or data_args.num_beams is None:
        return {}
    return {"num_beams": data_args.num_beams}


def evaluate(trainer: Any, data_args: DataArguments, *, eval_size: int) -> dict[str, float]:
    metrics = dict(trainer.evaluate(metric_key_prefix="eval", **_final_gen_kwargs(trainer, data_args)))
    metrics["eval_samples"] = eval_size
    return metrics


def predict(
    trainer: Any,
    dataset: datasets.Dataset,
    tokenizer: Any,
    data_args: DataArguments,
    *,
    references: Sequence[str] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Test metrics and the decoded hypotheses, in dataset order. With `references` (the raw test targets),
    the scores are computed against them rather than against the decoded labels, which lose what
    `val_max_target_length` truncated and what the tokenizer normalizes: a published score is against the
    references as written."""
    output = trainer.predict(dataset, metric_key_prefix="predict", **_final_gen_kwargs(trainer, data_args))
    metrics = dict(output.metrics or {})
    metrics["predict_samples"] = len(dataset)
    if not trainer.args.predict_with_generate:
        return metrics, []
    hypotheses = [
        text.strip() for text in tokenizer.batch_decode(output.predictions, skip_special_tokens=True)
    ]
    if len(hypotheses) != len(dataset):
        raise RuntimeError(
            f"the trainer returned {len(hypotheses)} predictions for {len(dataset)} test examples"
        )
    score_texts = getattr(trainer.compute_metrics, "score_texts", None)
    if references is not None and score_texts is not None:
        for name, value in score_texts(hypotheses, list(references)).items():
            key = f"predict_{name}"
            if key in metrics and abs(metrics[key] - value) > 1e-9:
                logger.info(
                    "test %s against the raw references: %.4f (against the tokenized labels: %.4f)",
                    name,
                    value,
                    metrics[key],
                )
            metrics[key] = value
    return metrics, hypotheses
