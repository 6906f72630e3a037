"""An attempt that torchrun restarted reuses the tokenizer its job's first attempt saved in output_dir, even
with --overwrite_output_dir: the checkpoint it resumes from was trained on those ids. A first attempt, and a
restart of a job that never started training there, train a new one as before."""

import logging

import datasets
import pytest

from recipes import tokenizer as recipe_tokenizer
from recipes.arguments import ModelArguments
from recipes.data import SOURCE, TARGET
from s2s import Seq2SeqTrainingArguments, elastic

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "rug",
    "house",
    "tree",
    "red",
    "blue",
    "small",
    "big",
]


def pairs(n: int, offset: int) -> datasets.Dataset:
    """Sentences over WORDS; another offset makes another corpus, so a tokenizer trained on it differs."""
    rows = [
        " ".join(WORDS[(i * 7 + k * 3 + offset) % len(WORDS)] + ("s" * offset) for k in range(4 + i % 5))
        for i in range(n)
    ]
    return datasets.Dataset.from_dict({SOURCE: rows, TARGET: rows[::-1]})


def attempt(monkeypatch, restart_count: int, job: str = "job-1") -> elastic.ElasticLaunch:
    monkeypatch.setenv(elastic.RESTART_COUNT_VAR, str(restart_count))
    monkeypatch.setenv(elastic.MAX_RESTARTS_VAR, "3")
    monkeypatch.setenv(elastic.RUN_ID_VAR, job)
    return elastic.ElasticLaunch.from_environ()


@pytest.fixture
def setup(tmp_path):
    model_args = ModelArguments(tokenizer_backend="bpe", vocab_size=300)
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "run"), overwrite_output_dir=True, report_to="none", use_cpu=True
    )
    return model_args, training_args


def vocabulary(tokenizer) -> dict:
    return dict(tokenizer.get_vocab())


def test_a_restart_reuses_the_tokenizer_its_first_attempt_saved(setup, monkeypatch, caplog):
    model_args, training_args = setup
    launch = attempt(monkeypatch, 0)
    first = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=0))
    elastic.record_training_start(training_args.output_dir, launch)  # the first attempt started training

    attempt(monkeypatch, 1)
    trained = []
    original = recipe_tokenizer._train_tokenizer
    monkeypatch.setattr(
        recipe_tokenizer, "_train_tokenizer", lambda *a, **k: trained.append(1) or original(*a, **k)
    )
    with caplog.at_level(logging.WARNING, logger="recipes"):
        again = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=1))
    assert trained == []  # not trained again, although the data would give another vocabulary
    assert vocabulary(again) == vocabulary(first)
    assert again("the cat sat")["input_ids"] == first("the cat sat")["input_ids"]
    assert "restart 1 of 3 (torchrun): reusing the tokenizer the first attempt saved" in caplog.text


def test_without_the_restart_a_new_tokenizer_is_trained_over_the_saved_one(setup, monkeypatch):
    model_args, training_args = setup
    launch = attempt(monkeypatch, 0)
    first = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=0))
    elastic.record_training_start(training_args.output_dir, launch)
    # The same job's first attempt run again (no restart), and a restart of a job that never trained here:
    # --overwrite_output_dir trains a new tokenizer on the (changed) data, as before.
    again = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=1))
    assert vocabulary(again) != vocabulary(first)
    attempt(monkeypatch, 1, job="job-2")
    other = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=2))
    assert vocabulary(other) != vocabulary(again)


def test_a_restart_before_training_started_trains_as_its_first_attempt_did(setup, monkeypatch):
    model_args, training_args = setup
    attempt(monkeypatch, 0)
    first = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=0))
    attempt(monkeypatch, 1)  # the first attempt died before training: no run record names the job
    again = recipe_tokenizer.load_or_train_tokenizer(model_args, training_args, pairs(200, offset=1))
    assert vocabulary(again) != vocabulary(first)
