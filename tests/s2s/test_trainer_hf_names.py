"""The names a script ported from Hugging Face's examples calls on the Trainer: the process checks, the
end-of-run reports, ``processing_class``, the metric keys of train/evaluate/predict, refusing to resume from a
Hugging Face checkpoint, the trackers of ``report_to`` and ``set_seed(seed, deterministic)``."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import s2s
from s2s.checkpointing import CheckpointError
from s2s.data_collator import DataCollatorWithPadding
from s2s.evaluation import evaluation_speed
from s2s.reporting import MLflowCallback, WandbCallback
from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, toy_args

REPORT_FILES = {"train_results.json", "all_results.json", "trainer_state.json", "README.md"}


def make_trainer(output_dir: Path, **overrides) -> Trainer:
    return Trainer(
        model=ToySeq2Seq(),
        args=toy_args(output_dir, **overrides),
        data_collator=ToyCollator(),
        train_dataset=make_examples(16, seed=1),
        eval_dataset=make_examples(6, seed=2),
    )


@pytest.fixture
def trained(tmp_path) -> tuple[Trainer, dict]:
    trainer = make_trainer(tmp_path / "out", max_steps=4)
    return trainer, trainer.train().metrics


# ------------------------------------------------------------------------------------------ reports
def test_reports_write_hugging_face_files(trained, capsys):
    trainer, metrics = trained
    out = Path(trainer.args.output_dir)
    assert trainer.is_world_process_zero() is True and trainer.is_local_process_zero() is True
    trainer.log_metrics("train", metrics)
    assert "***** train metrics *****" in capsys.readouterr().out
    trainer.save_metrics("train", metrics)
    trainer.save_metrics("eval", {"eval_loss": 1.5}, combined=False)
    assert json.loads((out / "train_results.json").read_text())["train_loss"] == metrics["train_loss"]
    assert json.loads((out / "eval_results.json").read_text()) == {"eval_loss": 1.5}
    assert set(json.loads((out / "all_results.json").read_text())) == set(metrics)  # eval not combined
    trainer.save_state()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["log_history"][-1]["train_loss"] == metrics["train_loss"]
    card = trainer.create_model_card(language="en", tags="toy", tasks="translation", dataset="toy pairs")
    text = card.read_text()
    assert card == out / "README.md"
    assert "- en" in text and "- toy" in text and "on the toy pairs dataset" in text


def test_reports_come_from_the_main_process_only(trained, monkeypatch, capsys):
    trainer, metrics = trained
    monkeypatch.setattr(type(trainer.strategy), "is_world_process_zero", property(lambda self: False))
    assert trainer.is_world_process_zero() is False
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    assert trainer.create_model_card() is None
    assert capsys.readouterr().out == ""
    out = Path(trainer.args.output_dir)  # no checkpoints saved: it may not even exist
    assert not out.exists() or not {p.name for p in out.iterdir()} & REPORT_FILES


# ------------------------------------------------------------------------------------------ processing_class
class PadOnly:
    pad_token_id = 0

    def pad(self, features, return_tensors="pt", **kwargs):  # what DataCollatorWithPadding calls
        raise NotImplementedError


def test_processing_class_is_the_tokenizer(tmp_path):
    tokenizer = PadOnly()
    trainer = Trainer(model=ToySeq2Seq(), args=toy_args(tmp_path), processing_class=tokenizer)
    assert trainer.tokenizer is tokenizer and trainer.processing_class is tokenizer
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)  # built from it, as from tokenizer=
    assert trainer.callback_handler.tokenizer is tokenizer
    with pytest.raises(ValueError, match="tokenizer= or as processing_class=, not both"):
        Trainer(model=ToySeq2Seq(), args=toy_args(tmp_path), tokenizer=tokenizer, processing_class=tokenizer)


# ------------------------------------------------------------------------------------------ metric keys
def test_metric_keys_as_hugging_face(trained):
    trainer, metrics = trained
    assert {"epoch", "train_steps_per_second", "train_samples_per_second", "train_runtime"} <= set(metrics)
    assert metrics["train_steps_per_second"] == pytest.approx(4 / metrics["train_runtime"], rel=0.05)
    assert metrics["epoch"] == trainer.state.epoch == trainer.state.log_history[-1]["epoch"]
    evaluated = trainer.evaluate()
    assert evaluated["epoch"] == trainer.state.epoch and evaluated["eval_steps_per_second"] > 0
    predicted = trainer.predict(make_examples(6, seed=3)).metrics
    assert "epoch" not in predicted and {"test_loss", "test_steps_per_second"} <= set(predicted)


def test_train_steps_per_second_counts_the_updates_of_this_call(tmp_path):
    out = tmp_path / "out"
    make_trainer(out, max_steps=2, save_strategy="steps", save_steps=2).train()
    resumed = make_trainer(out, max_steps=5, save_strategy="no")
    metrics = resumed.train(resume_from_checkpoint=str(out / "checkpoint-2")).metrics
    assert resumed.state.global_step == 5
    assert metrics["train_steps_per_second"] == pytest.approx(3 / metrics["train_runtime"], rel=0.05)


def test_evaluation_steps_are_rounds_of_every_process():
    started = time.time() - 2.0
    metrics = evaluation_speed("eval", started, num_samples=10, total_batch_size=4)  # 3 rounds of 2 x 2
    rounds = metrics["eval_samples_per_second"] / metrics["eval_steps_per_second"]
    assert rounds == pytest.approx(10 / 3, rel=1e-2)


# ------------------------------------------------------------------------------------------ resume
def hf_checkpoint(folder: Path) -> Path:
    """What Hugging Face's Trainer leaves in a checkpoint folder (contents do not matter here)."""
    folder.mkdir(parents=True)
    for name in (
        "training_args.bin",
        "rng_state.pth",
        "optimizer.pt",
        "model.safetensors",
        "trainer_state.json",
    ):
        (folder / name).write_bytes(b"written by transformers")
    return folder


def test_resuming_from_a_hugging_face_checkpoint_says_how_to_train_from_its_weights(tmp_path):
    checkpoint = hf_checkpoint(tmp_path / "out" / "checkpoint-4")
    trainer = make_trainer(tmp_path / "out", overwrite_output_dir=True)
    for resume in (str(checkpoint), True):
        with pytest.raises(CheckpointError, match="written by Hugging Face's Trainer") as err:
            trainer.train(resume_from_checkpoint=resume)
        assert "from_pretrained" in str(err.value) and "--model_name_or_path" in str(err.value)
    assert trainer.state.global_step == 0  # refused before any training


# ------------------------------------------------------------------------------------------ report_to
@pytest.mark.parametrize(("name", "callback"), [("mlflow", MLflowCallback), ("wandb", WandbCallback)])
def test_report_to_a_tracker_adds_its_callback(tmp_path, name, callback):
    pytest.importorskip(name)
    trainer = Trainer(model=ToySeq2Seq(), args=toy_args(tmp_path, report_to=["jsonl", name]))
    kinds = [type(c) for c in trainer.callback_handler.callbacks]
    assert callback in kinds


# ------------------------------------------------------------------------------------------ set_seed
def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


@pytest.fixture
def determinism_calls(monkeypatch) -> list[bool]:
    """Records the deterministic-kernels switch instead of flipping it for the rest of the test session."""
    calls: list[bool] = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **kw: calls.append(mode))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", torch.backends.cudnn.deterministic)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return calls


def test_set_seed_takes_hugging_face_deterministic_argument(determinism_calls):
    s2s.set_seed(3)
    first = draws()
    s2s.set_seed(3, True)  # positional, as Hugging Face's set_seed(seed, deterministic)
    assert draws() == first and determinism_calls == [True]
    s2s.set_seed(3, deterministic=True)
    s2s.set_seed(3, full_determinism=True)  # the training argument's name
    s2s.set_seed(3, full_determinism=False)
    assert determinism_calls == [True, True, True]
    with pytest.raises(ValueError, match="deterministic=True and full_determinism=False"):
        s2s.set_seed(3, True, full_determinism=False)
