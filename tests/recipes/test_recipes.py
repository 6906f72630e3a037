import io
import json

import pytest
import yaml

from recipes import arguments, callbacks, data, modeling, outputs, preprocessing, training
from recipes.arguments import DataArguments, ModelArguments
from recipes.tokenizer import load_any_tokenizer
from s2s import Seq2SeqTrainingArguments
from s2s.precision import bf16_is_native
from tests.paths import REPO

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
MULTI30K = REPO / "recipes" / "data" / "multi30k"


def parse(*argv: str):
    return arguments.parse_arguments([str(a) for a in argv])


# ----------------------------------------------------------------------------------------------------------------
# configs and arguments


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses_and_is_consistent(config):
    model_args, data_args, training_args = parse(config)
    task = "summarization" if data_args.summary_column and not data_args.source_lang else "translation"
    arguments.task_defaults(task, data_args)
    assert training_args.do_train and training_args.do_predict and training_args.predict_with_generate
    assert data_args.train_file and data_args.test_file
    if "samsum" not in config.name:  # the bundled data must be where the config says
        for path in (data_args.train_file, data_args.validation_file, data_args.test_file):
            assert (REPO / path).is_file(), path
    if model_args.model_overrides:
        from s2s.models import TransformerConfig

        TransformerConfig.preset(model_args.model_preset, **model_args.model_overrides)


def test_demo_config_is_the_promised_job():
    model_args, data_args, training_args = parse(REPO / "recipes/configs/demo_multi30k.yaml")
    assert (data_args.source_lang, data_args.target_lang) == ("de", "en")
    assert model_args.model_preset == "small" and model_args.vocab_size == 8000
    assert model_args.tokenizer_backend == "sentencepiece"
    assert training_args.max_tokens_per_batch
    # bf16 where the CPU computes it, fp32 where bf16 would be many times slower
    assert yaml.safe_load((REPO / "recipes/configs/demo_multi30k.yaml").read_text())["bf16"] == "auto"
    assert training_args.bf16 is bf16_is_native(on_cuda=False)
    assert training_args.label_smoothing_factor == 0.1 and data_args.num_beams == 4
    # a fixed number of updates, the same on every machine: no wall-clock budget that a busy machine cuts short
    assert training_args.max_steps == 1500 and data_args.max_train_minutes is None


def test_config_file_with_command_line_overrides(tmp_path):
    model_args, data_args, training_args = parse(
        REPO / "recipes/configs/debug_translation.yaml",
        "--max_steps",
        "2",
        "--output_dir",
        tmp_path,
        "--model_overrides",
        '{"d_model": 16}',
    )
    assert training_args.max_steps == 2 and training_args.output_dir == str(tmp_path)
    assert model_args.model_overrides == {"d_model": 16}
    assert data_args.source_lang == "de"  # from the file


def test_unknown_argument_is_refused():
    with pytest.raises((ValueError, SystemExit)):
        parse(REPO / "recipes/configs/debug_translation.yaml", "--max_source_lenght", "5")


TRAIN_DE_EN = ["--do_train", "--train_file", "x", "--source_lang", "de", "--target_lang", "en"]


def tiny_model_arguments() -> ModelArguments:
    """A new model of the smallest shape: what the tests of building and wiring need, not what learns."""
    return ModelArguments(
        model_preset="tiny",
        model_overrides={
            "d_model": 16,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "num_heads": 2,
            "ffn_dim": 32,
        },
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--do_train", "--source_lang", "de", "--target_lang", "en"], "do_train needs --train_file"),
        (
            ["--do_predict", "--source_lang", "de", "--target_lang", "en", "--test_file", "x"],
            "needs a trained model",
        ),
        (["--source_lang", "de", "--target_lang", "en"], "nothing to do"),
        (["--do_train", "--train_file", "x", "--source_lang", "de"], "both --source_lang and --target_lang"),
        (["--do_train", "--train_file", "x"], "needs --source_lang"),
        (
            [
                "--do_train",
                "--train_file",
                "x",
                "--source_lang",
                "de",
                "--target_lang",
                "en",
                "--eval_strategy",
                "steps",
            ],
            "needs --validation_file",
        ),
        (
            [
                "--do_train",
                "--train_file",
                "x",
                "--source_lang",
                "de",
                "--target_lang",
                "en",
                "--max_source_length",
                "1",
            ],
            ">= 2",
        ),
        (
            [
                *TRAIN_DE_EN,
                "--average_last_checkpoints",
                "3",
                "--load_best_model_at_end",
                "--eval_strategy",
                "steps",
                "--validation_file",
                "x",
                "--metric_for_best_model",
                "loss",
            ],
            "both choose the final weights",
        ),
        (
            [*TRAIN_DE_EN, "--average_last_checkpoints", "3", "--save_total_limit", "2"],
            "raise save_total_limit to at least 3",
        ),
        ([*TRAIN_DE_EN, "--average_last_checkpoints", "3", "--save_strategy", "no"], "needs checkpoints"),
        ([*TRAIN_DE_EN, "--average_last_checkpoints", "1"], "must be >= 2"),
        ([*TRAIN_DE_EN, "--num_threads", "0"], "num_threads must be >= 1"),
    ],
)
def test_contradictions_fail_before_any_work(tmp_path, argv, message):
    model_args, data_args, training_args = parse(*argv, "--output_dir", tmp_path)
    with pytest.raises(ValueError, match=message):
        arguments.task_defaults("translation", data_args)
        arguments.check_arguments(model_args, data_args, training_args)


def test_existing_checkpoints_need_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    argv = [
        "--do_train",
        "--train_file",
        "x",
        "--source_lang",
        "de",
        "--target_lang",
        "en",
        "--output_dir",
        tmp_path,
    ]
    model_args, data_args, training_args = parse(*argv)
    arguments.task_defaults("translation", data_args)
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        arguments.check_arguments(model_args, data_args, training_args)
    arguments.check_arguments(*parse(*argv, "--overwrite_output_dir"))


def test_fields_follow_the_format():
    data_args = arguments.task_defaults("translation", DataArguments(source_lang="de", target_lang="en"))
    assert data.fields_for("translation", data_args, "a/train.jsonl.gz") == (
        "translation.de",
        "translation.en",
    )
    assert data.fields_for("translation", data_args, "a/train.tsv") == ("de", "en")
    assert data.fields_for("translation", data_args, "a/train") == ("de", "en")
    summary = arguments.task_defaults("summarization", DataArguments())
    assert data.fields_for("summarization", summary, "x.jsonl") == ("document", "summary")
    assert summary.metrics == ["rouge"]


# ----------------------------------------------------------------------------------------------------------------
# data, tokenizer and model steps


@pytest.fixture(scope="module")
def tokenizer():
    from s2s.tokenization import train_joint_tokenizer

    pairs = [("ein kleiner hund läuft", "a small dog runs"), ("zwei große katzen", "two big cats")] * 20
    return train_joint_tokenizer(pairs, vocab_size=60, hard_vocab_limit=False)


def test_tokenize_batch_truncates_keeping_eos_and_flags_it(tokenizer):
    batch = {
        "source": ["ein kleiner hund läuft " * 5, "zwei"],
        "target": ["a small dog runs", "two big cats " * 6],
    }
    out = preprocessing.tokenize_batch(
        batch, tokenizer=tokenizer, prefix="", max_source_length=6, max_target_length=5
    )
    assert [len(x) for x in out["input_ids"]][0] == 6 and out["input_ids"][0][-1] == tokenizer.eos_token_id
    assert out["labels"][1][-1] == tokenizer.eos_token_id and len(out["labels"][1]) == 5
    assert out["source_truncated"] == [True, False] and out["target_truncated"][1] is True
    assert [len(m) for m in out["attention_mask"]] == [len(x) for x in out["input_ids"]]


def test_tokenize_splits_counts_truncation_and_can_refuse_it(tokenizer, tmp_path, caplog):
    from recipes.text_files import load_text_pairs

    path = tmp_path / "d.jsonl"
    rows = [{"document": "ein kleiner hund läuft " * (1 + i % 4), "summary": "a dog"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = load_text_pairs(path, source_field="document", target_field="summary", cache_dir=tmp_path / "cache")
    data_args = arguments.task_defaults(
        "summarization", DataArguments(max_source_length=10, dataset_cache_dir=str(tmp_path))
    )
    with caplog.at_level("WARNING", logger="recipes"):
        tokenized = preprocessing.tokenize_splits({"train": raw}, tokenizer, data_args)
    assert tokenized["train"].column_names == ["input_ids", "attention_mask", "labels", "length"]
    longest = max(len(x) for x in tokenized["train"]["input_ids"])
    assert longest == 10 and "sources are longer than max_source_length=10" in caplog.text
    data_args.error_on_truncation = True
    with pytest.raises(ValueError, match="raise --max_source_length"):
        preprocessing.tokenize_splits({"train": raw}, tokenizer, data_args)


def test_new_model_matches_the_tokenizer_and_generation_defaults_are_saved(tokenizer, tmp_path):
    model_args = tiny_model_arguments()
    data_args = arguments.task_defaults("summarization", DataArguments(num_beams=3, max_target_length=20))
    model = modeling.load_or_build_model(model_args, data_args, tokenizer)
    assert model.config.vocab_size == len(tokenizer) and model.config.pad_token_id == tokenizer.pad_token_id
    modeling.configure_generation(model, data_args, new_model=True)
    assert model.generation_config.num_beams == 3 and model.generation_config.max_new_tokens == 20
    # a loaded model keeps its saved length unless val_max_target_length is given
    modeling.configure_generation(model, DataArguments(max_target_length=128), new_model=False)
    assert model.generation_config.max_new_tokens == 20
    modeling.configure_generation(model, DataArguments(val_max_target_length=7), new_model=False)
    assert model.generation_config.max_new_tokens == 7
    # --generation_config settings are saved with the model; num_beams from the data arguments still wins
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), generation_config={"no_repeat_ngram_size": 3, "num_beams": 2}
    )
    modeling.configure_generation(model, data_args, new_model=True, training_args=training_args)
    assert model.generation_config.no_repeat_ngram_size == 3 and model.generation_config.num_beams == 3


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tokenizer, tmp_path):
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    small = TransformerConfig.preset(
        "tiny",
        vocab_size=len(tokenizer) - 10,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        num_heads=2,
        ffn_dim=32,
    )
    TransformerForConditionalGeneration(small).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "tok")
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "model"))
    data_args = arguments.task_defaults("summarization", DataArguments())
    with pytest.raises(ValueError, match="vocab_size"):
        modeling.load_or_build_model(model_args, data_args, load_any_tokenizer(tmp_path / "tok"))


# ----------------------------------------------------------------------------------------------------------------
# outputs


def test_results_files_merge_and_stay_valid_json(tmp_path):
    outputs.write_results(tmp_path, "eval", {"eval_bleu": 12.5, "eval_loss": float("nan")})
    outputs.write_results(tmp_path, "predict", {"predict_bleu": 11.0})
    assert json.loads((tmp_path / "eval_results.json").read_text())["eval_loss"] == "nan"
    assert set(json.loads((tmp_path / "all_results.json").read_text())) == {
        "eval_bleu",
        "eval_loss",
        "predict_bleu",
    }


def test_predictions_files_line_up_with_the_test_set(tmp_path):
    import datasets

    raw = datasets.Dataset.from_dict(
        {"source": ["Ein Hund.", "Zwei Katzen."], "target": ["A dog.", "Two cats."]}
    )
    rows = outputs.write_predictions(tmp_path, raw, ["A dog.", "Two\ndogs."], metric_names=["bleu", "chrf"])
    lines = (tmp_path / "generated_predictions.txt").read_text().splitlines()
    assert lines == ["A dog.", "Two dogs."]  # a newline in a hypothesis must not shift the file
    jsonl = [json.loads(line) for line in (tmp_path / "generated_predictions.jsonl").read_text().splitlines()]
    assert jsonl == rows and jsonl[1]["reference"] == "Two cats."
    assert jsonl[0]["scores"]["bleu"] == pytest.approx(100.0) and jsonl[0]["scores"]["chrf"] == pytest.approx(
        100.0
    )
    assert jsonl[1]["scores"]["bleu"] < 100.0


def test_test_scores_are_against_the_raw_references(tokenizer):
    """The labels a trainer scores against are tokenized, so truncated to val_max_target_length: the recipe
    rescoring against the references as written must replace that score."""
    from types import SimpleNamespace

    import numpy as np

    import metrics as m
    from metrics import Seq2SeqMetrics

    hypothesis = "a small dog runs"
    ids = np.array([tokenizer(hypothesis)["input_ids"]])
    trainer = SimpleNamespace(
        args=SimpleNamespace(predict_with_generate=True),
        compute_metrics=Seq2SeqMetrics(tokenizer, metrics=("bleu",)),
        predict=lambda dataset, **kwargs: SimpleNamespace(predictions=ids, metrics={"predict_bleu": 100.0}),
    )
    reference = "a small dog runs two big cats"  # what a truncated label would have cut
    scores, hypotheses = training.predict(
        trainer, ["row"], tokenizer, DataArguments(), references=[reference]
    )
    assert hypotheses == [hypothesis]
    assert (
        scores["predict_bleu"] == pytest.approx(m.bleu([hypothesis], [reference])["bleu"])
        and scores["predict_bleu"] < 100
    )


def test_sentence_rouge_for_summaries():
    rows = outputs.sentence_scores(["tom is happy. he sings."], ["tom is happy. he sings."], ["rouge"])
    assert rows[0]["rouge1"] == pytest.approx(100.0) and set(rows[0]) == {
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
    }


# ----------------------------------------------------------------------------------------------------------------
# generate: a saved model translates stdin line by line


def test_generate_reads_stdin_and_keeps_line_order(tokenizer, tmp_path):
    from recipes import generate
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    config = TransformerConfig.preset(
        "tiny",
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        num_heads=2,
        ffn_dim=32,
    )
    model = TransformerForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 5
    model.save_pretrained(tmp_path)
    model.generation_config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lines = ["ein kleiner hund", "", "zwei große katzen läuft hund"]
    out = io.StringIO()
    assert (
        generate.main(
            [str(tmp_path), "--num_beams", "2", "--batch_size", "2"],
            stdin=io.StringIO("\n".join(lines) + "\n"),
            stdout=out,
        )
        == 0
    )
    produced = out.getvalue().split("\n")[:-1]
    assert len(produced) == 3 and produced[1] == ""
    # batches are sorted by length: each output must still match generating that line on its own
    alone = generate.generate_lines([lines[2]], *generate.load_model(tmp_path), num_beams=2)
    assert produced[2] == alone[0]

    # the batches are decoded inside one fixed_weights() block: the packed decoder weights are made once
    model, tokenizer = generate.load_model(tmp_path)
    inside, original = [], model.generate
    model.generate = lambda *args, **kwargs: inside.append(model._reused_packs) or original(*args, **kwargs)
    generate.generate_lines(lines, model, tokenizer, batch_size=1)
    assert len(inside) == 2 and inside[0] is not None and inside[1] is inside[0]


def test_time_budget_stops_training_with_a_checkpoint_and_an_evaluation():
    from types import SimpleNamespace

    from s2s.callbacks import TrainerControl

    callback = callbacks.TimeBudgetCallback(minutes=1e-9)
    args = SimpleNamespace(save_strategy="steps", eval_strategy="no")
    state = SimpleNamespace(global_step=7)
    control = TrainerControl()
    callback.on_step_end(args, state, control)  # before on_train_begin: no clock, no stop
    assert not control.should_training_stop
    callback.on_train_begin(args, state, control)
    control = callback.on_step_end(args, state, control)
    assert control.should_training_stop and control.should_save and not control.should_evaluate
    with pytest.raises(ValueError, match="max_train_minutes"):
        arguments.task_defaults("summarization", DataArguments(max_train_minutes=0))


def test_recipes_run_as_plain_scripts():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "translation.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO.parent,  # not the repository: the script must find its own package
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--source_lang" in done.stdout and "--max_tokens_per_batch" in done.stdout


def test_learning_curves_are_drawn_from_the_history_training_left(tmp_path, monkeypatch):
    """The final evaluation (best checkpoint, 4 beams) is logged at the last step too; the curves leave it out
    so that it does not read as one more point of the greedy validation curve."""
    from types import SimpleNamespace

    import recipes.plotting

    drawn = []
    monkeypatch.setattr(
        recipes.plotting, "plot_learning_curves", lambda history, out: drawn.append(history) or []
    )
    training = [{"step": 10, "loss": 2.0}, {"step": 20, "eval_bleu": 30.0}]
    final = {"step": 20, "eval_bleu": 33.0}
    state = SimpleNamespace(log_history=[*training, final], save_to_json=lambda path: None)
    saver = SimpleNamespace(save_pretrained=lambda path: None)
    trainer = SimpleNamespace(args=SimpleNamespace(output_dir=str(tmp_path)), state=state)
    model = SimpleNamespace(generation_config=saver)
    outputs.save_run_files(trainer, saver, model, ModelArguments(), DataArguments(), curve_history=training)
    outputs.save_run_files(trainer, saver, model, ModelArguments(), DataArguments())  # no training: all of it
    assert drawn == [training, [*training, final]]


def test_time_budget_bar_shows_seconds_of_the_budget_not_steps():
    from types import SimpleNamespace

    budget = callbacks.TimeBudgetCallback(minutes=0.5)
    bar = callbacks.TimeBudgetProgressCallback(budget)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=3000)
    budget.on_train_begin(None, state, None)
    bar.on_train_begin(None, state, None)
    assert bar.training_bar.total == 30  # seconds, whatever max_steps says
    budget.start -= 12.4  # 12 seconds into the budget
    state.global_step = 5
    bar.on_step_end(None, state, None)
    assert bar.training_bar.n == 12 and "step 5/3000" in bar.training_bar.postfix
    assert "of 00:30" in str(bar.training_bar)
    budget.start -= 100  # past the budget: the bar stops full
    bar.on_step_end(None, state, None)
    assert bar.training_bar.n == 30
    bar.on_train_end(None, state, None)


def test_a_time_budget_replaces_the_step_bar(tokenizer, tmp_path):
    from s2s.callbacks import PrinterCallback, ProgressCallback

    model_args = tiny_model_arguments()
    data_args = arguments.task_defaults("translation", DataArguments(source_lang="de", target_lang="en"))
    model = modeling.load_or_build_model(model_args, data_args, tokenizer)

    def kinds(minutes, disable_tqdm):
        data_args.max_train_minutes = minutes
        args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=disable_tqdm)
        trainer = training.build_trainer(model, tokenizer, args, {}, data_args=data_args, task="translation")
        return [type(cb) for cb in trainer.callback_handler.callbacks]

    budget_bar = kinds(1.0, False)
    assert callbacks.TimeBudgetProgressCallback in budget_bar and ProgressCallback not in budget_bar
    assert callbacks.TimeBudgetCallback in budget_bar
    assert ProgressCallback in kinds(None, False)  # no budget: the usual step bar
    printed = kinds(1.0, True)  # no bars at all: nothing to replace
    assert PrinterCallback in printed and callbacks.TimeBudgetProgressCallback not in printed
