"""The job both recipes run, top to bottom: arguments -> text -> tokenizer -> ids -> model -> trainer -> scores.

`recipes/translation.py` and `recipes/summarization.py` differ only in the task name, which selects the data
fields, metrics and summary printout (`common.task_defaults`); keeping one pipeline means a fix reaches both.
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.common import (
    TARGET,
    build_trainer,
    check_arguments,
    configure_generation,
    evaluate,
    load_or_build_model,
    load_or_train_tokenizer,
    load_splits,
    parse_arguments,
    predict,
    print_summary,
    save_run_files,
    setup_logging,
    task_defaults,
    tokenize_splits,
    train,
    write_predictions,
    write_results,
)
from s2s.distributed import init_distributed


def run(task: str, argv: Sequence[str] | None = None) -> dict[str, float]:
    """The whole job for `task` ("translation" or "summarization"), from the command line or `argv`."""
    model_args, data_args, training_args = parse_arguments(argv)
    init_distributed(training_args)  # under torchrun: the process group first, so rank 0 can go first below
    setup_logging(training_args)
    task_defaults(task, data_args)
    check_arguments(model_args, data_args, training_args)

    # text -> tokenizer -> ids (rank 0 trains and saves the tokenizer, the others load it; rank 0 fills the
    # tokenization cache first)
    raw = load_splits(task, data_args, training_args)
    with training_args.main_process_first(local=False, desc="tokenizer training"):
        tokenizer = load_or_train_tokenizer(model_args, training_args, raw.get("train"))
    with training_args.main_process_first(desc="dataset tokenization"):
        tokenized = tokenize_splits(raw, tokenizer, data_args, report_truncation=training_args.should_log)

    # model and trainer
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
