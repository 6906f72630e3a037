"""Train, evaluate and use a translation model, from raw text files to a scored model.

    python -m recipes.translation recipes/configs/multi30k_de_en.yaml            # a config file
    python -m recipes.translation recipes/configs/demo_multi30k.yaml --max_steps 50   # with overrides
    python -m recipes.translation --do_train --do_eval --do_predict --source_lang de --target_lang en \\
        --train_file data/train.jsonl --validation_file data/val.jsonl --test_file data/test.jsonl \\
        --output_dir out --predict_with_generate --max_tokens_per_batch 4096
    python -m recipes.translation --do_predict --model_name_or_path out --test_file new.jsonl \\
        --source_lang de --target_lang en --output_dir out/new --predict_with_generate

Writes to output_dir: the model, tokenizer and generation config; train/eval/predict/all_results.json;
generated_predictions.txt and .jsonl (source, reference, hypothesis, sentence BLEU/chrF); learning-curve PNGs;
trainer_state.json. Ends by printing the test BLEU and a few translations.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/translation.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recipes import common
from s2s.distributed import init_distributed

TASK = "translation"


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = common.parse_arguments(argv)
    init_distributed(training_args)  # under torchrun: the process group first, so rank 0 can go first below
    common.setup_logging(training_args)
    common.task_defaults(TASK, data_args)
    common.check_arguments(model_args, data_args, training_args)

    # text -> tokenizer -> ids (rank 0 trains and saves the tokenizer, the others load it; rank 0 fills the
    # tokenization cache first)
    raw = common.load_splits(TASK, data_args, training_args)
    with training_args.main_process_first(local=False, desc="tokenizer training"):
        tokenizer = common.load_or_train_tokenizer(model_args, training_args, raw.get("train"))
    with training_args.main_process_first(desc="dataset tokenization"):
        tokenized = common.tokenize_splits(
            raw, tokenizer, data_args, report_truncation=training_args.should_log
        )

    # model and trainer
    model = common.load_or_build_model(model_args, data_args, tokenizer)
    common.configure_generation(model, data_args, new_model=model_args.model_name_or_path is None)
    trainer = common.build_trainer(model, tokenizer, training_args, tokenized, data_args=data_args, task=TASK)

    results: dict[str, float] = {}
    writes = training_args.process_index == 0
    if training_args.do_train:
        metrics = common.train(trainer, training_args, train_size=len(tokenized["train"]))
        results.update(metrics)
        if writes:
            common.write_results(training_args.output_dir, "train", metrics)
    if training_args.do_eval:
        metrics = common.evaluate(trainer, data_args, eval_size=len(tokenized["validation"]))
        results.update(metrics)
        if writes:
            common.write_results(training_args.output_dir, "eval", metrics)
    if writes:
        common.save_run_files(trainer, tokenizer, model, model_args, data_args)
    if training_args.do_predict:
        metrics, hypotheses = common.predict(trainer, tokenized["test"], tokenizer, data_args)
        results.update(metrics)
        if writes:
            common.write_results(training_args.output_dir, "predict", metrics)
            rows = []
            if hypotheses:
                rows = common.write_predictions(
                    training_args.output_dir, raw["test"], hypotheses, metric_names=data_args.metrics or ()
                )
            common.print_summary(TASK, metrics, rows, examples=data_args.num_examples_to_print)
    return results


if __name__ == "__main__":
    main()
