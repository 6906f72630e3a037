"""The job both recipes run, top to bottom: arguments -> text -> tokenizer -> ids -> model -> trainer -> scores.

`recipes/translation.py` and `recipes/summarization.py` differ only in the task name, which selects the data
fields, metrics and summary printout (`arguments.task_defaults`); keeping one pipeline means a fix reaches both.
Each step lives in the module named after its concern: arguments, data (raw text), tokenizer, preprocessing
(ids), modeling, training (trainer, train/evaluate/predict), outputs (files and the printed summary).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import datasets
import torch

from recipes.arguments import check_arguments, parse_arguments, task_defaults
from recipes.data import TARGET, load_splits
from recipes.modeling import configure_generation, load_or_build_model
from recipes.outputs import print_summary, save_run_files, write_predictions, write_results
from recipes.preprocessing import tokenize_splits
from recipes.tokenizer import load_or_train_tokenizer
from recipes.training import build_trainer, evaluate, predict, train
from s2s.distributed import init_distributed
from s2s.seeding import set_seed

logger = logging.getLogger("recipes")


def run(task: str, argv: Sequence[str] | None = None) -> dict[str, float]:
    """The whole job for `task` ("translation" or "summarization"), from the command line or `argv`."""
    model_args, data_args, training_args = parse_arguments(argv)
    init_distributed(training_args)  # under torchrun: the process group first, so rank 0 can go first below
    setup_logging(training_args)
    task_defaults(task, data_args)
    check_arguments(model_args, data_args, training_args)
    if model_args.num_threads is not None:
        torch.set_num_threads(model_args.num_threads)  # before any model math: see ModelArguments.num_threads

    # text -> tokenizer -> ids (rank 0 reads the text into the Arrow cache and the others then open it; rank 0
    # trains and saves the tokenizer, the others load it; rank 0 fills the tokenization cache first)
    with training_args.main_process_first(desc="reading the data"):
        raw = load_splits(task, data_args, training_args)
    with training_args.main_process_first(local=False, desc="tokenizer training"):
        tokenizer = load_or_train_tokenizer(model_args, training_args, raw.get("train"))
    with training_args.main_process_first(desc="dataset tokenization"):
        tokenized = tokenize_splits(raw, tokenizer, data_args, report_truncation=training_args.should_log)

    # model and trainer: a new model's weights are drawn from `seed`, whatever ran before
    set_seed(training_args.seed, full_determinism=training_args.full_determinism)
    model = load_or_build_model(model_args, data_args, tokenizer)
    configure_generation(
        model, data_args, new_model=model_args.model_name_or_path is None, training_args=training_args
    )
    trainer = build_trainer(model, tokenizer, training_args, tokenized, data_args=data_args, task=task)

    results: dict[str, float] = {}
    writes = training_args.process_index == 0
    training_history = None
    if training_args.do_train:
        metrics = train(
            trainer,
            training_args,
            train_size=len(tokenized["train"]),
            average_last_checkpoints=data_args.average_last_checkpoints,
        )
        training_history = list(trainer.state.log_history)
        results.update(metrics)
        if writes:
            write_results(training_args.output_dir, "train", metrics)
    if training_args.do_eval:
        metrics = evaluate(trainer, data_args, eval_size=len(tokenized["validation"]))
        results.update(metrics)
        if writes:
            write_results(training_args.output_dir, "eval", metrics)
    if writes:
        save_run_files(trainer, tokenizer, model, model_args, data_args, curve_history=training_history)
    if training_args.do_predict:
        metrics, hypotheses = predict(
            trainer, tokenized["test"], tokenizer, data_args, references=raw["test"][TARGET]
        )
        results.update(metrics)
        if writes:
            write_results(training_args.output_dir, "predict", metrics)
            rows = []
            if hypotheses:
                rows = write_predictions(
                    training_args.output_dir, raw["test"], hypotheses, metric_names=data_args.metrics or ()
                )
            print_summary(task, metrics, rows, examples=data_args.num_examples_to_print)
    return results


def setup_logging(training_args: Any) -> None:
    """The recipe's own progress at INFO on the main process unless a log_level is chosen; the other processes
    of a torchrun job at `log_level_replica` (as `get_process_log_level` says), their lines tagged with their
    rank. Libraries at the level the args give."""
    level = training_args.get_process_log_level()
    rank = f"[rank {training_args.process_index}] " if training_args.world_size > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s %(levelname)s %(name)s: {rank}%(message)s", datefmt="%H:%M:%S", level=level
    )
    main = training_args.should_log  # the main process (of each node, with log_on_each_node)
    logger.setLevel(logging.INFO if main and str(training_args.log_level) == "passive" else level)
    datasets.utils.logging.set_verbosity_warning()
