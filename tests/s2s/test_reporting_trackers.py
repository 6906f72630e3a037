"""report_to="mlflow" / "wandb": optional extras with a clear error when absent, and runs that land where the
environment says (a local MLflow file store, W&B in offline mode)."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from s2s.callbacks import TrainerControl, TrainerState
from s2s.reporting import (
    MLflowCallback,
    WandbCallback,
    _wandb_name,
    numeric_logs,
    reporting_callbacks,
    run_parameters,
)
from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, toy_args


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_absent_package_error_names_what_to_install(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail as if not installed
    with pytest.raises(ImportError, match=rf"pip install 's2s-toolkit\[{name}\]'"):
        reporting_callbacks([name])


def test_unknown_reporter_lists_the_choices():
    with pytest.raises(ValueError, match="mlflow.*wandb"):
        reporting_callbacks(["comet"])


class WithConfig(torch.nn.Linear):
    """A model with a Hugging Face style config."""

    def __init__(self):
        super().__init__(2, 2)
        self.config = SimpleNamespace(to_dict=lambda: {"d_model": 16, "learning_rate": "from the config"})


def test_parameters_are_the_model_config_under_the_arguments(tmp_path):
    params = run_parameters(toy_args(tmp_path, learning_rate=0.5), WithConfig())
    assert params["d_model"] == 16 and params["learning_rate"] == 0.5  # the argument wins
    assert run_parameters(toy_args(tmp_path), torch.nn.Linear(2, 2))["seed"] == 0  # no config: arguments only


def test_only_numbers_are_sent():
    logs = {"loss": 1.5, "step": 3, "grad_norm": torch.tensor(0.25), "flag": True, "note": "text"}
    assert numeric_logs(logs) == {"loss": 1.5, "step": 3, "grad_norm": 0.25}


def test_wandb_sections_by_split():
    assert [_wandb_name(k) for k in ("loss", "eval_bleu", "predict_loss", "test_x", "evaluation")] == [
        "train/loss",
        "eval/bleu",
        "predict/loss",
        "test/x",
        "train/evaluation",
    ]


# ---------------------------------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants opting in to the file store
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "s2s-test")
    monkeypatch.setenv("MLFLOW_TAGS", json.dumps({"team": "mt"}))
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_mlflow_records_a_training_run_and_its_final_evaluation(mlflow_store, tmp_path):
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=toy_args(tmp_path / "out", max_steps=4, logging_steps=2, run_name="toy-run"),
        data_collator=ToyCollator(),
        train_dataset=make_examples(16, seed=1),
        eval_dataset=make_examples(4, seed=2),
        callbacks=[MLflowCallback()],
    )
    trainer.train()
    assert mlflow_store.active_run() is None  # the run ends with training...
    trainer.evaluate()  # ...and the evaluation after it goes back into the same run

    client = mlflow_store.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("s2s-test")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "toy-run" and run.data.tags["team"] == "mt"
    assert run.data.params["learning_rate"] == "0.1" and run.data.params["optim"] == "sgd"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4]
    assert "train_runtime" in run.data.metrics and "eval_loss" in run.data.metrics


def test_mlflow_logs_nothing_from_other_processes(mlflow_store, tmp_path):
    callback = MLflowCallback()
    replica = TrainerState(is_world_process_zero=False, global_step=1)
    args = toy_args(tmp_path)
    callback.on_train_begin(args, replica, TrainerControl(), model=WithConfig())
    callback.on_log(args, replica, TrainerControl(), logs={"loss": 1.0})
    assert mlflow_store.active_run() is None
    assert mlflow_store.tracking.MlflowClient().get_experiment_by_name("s2s-test") is None


# ---------------------------------------------------------------------------------------------- W&B


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_PROJECT", "s2s-test")
    yield wandb
    wandb.finish()


def test_wandb_run_gets_config_series_and_summary(wandb_offline, tmp_path):
    callback = WandbCallback()
    args, state, control = (
        toy_args(tmp_path, run_name="toy-run"),
        TrainerState(global_step=2),
        TrainerControl(),
    )
    callback.on_train_begin(args, state, control, model=WithConfig())
    run = wandb_offline.run
    assert run is not None and run.name == "toy-run" and run.project == "s2s-test"
    assert run.config["learning_rate"] == 0.1 and run.config["d_model"] == 16
    callback.on_log(args, state, control, logs={"loss": 2.0, "learning_rate": 0.1, "epoch": 0.5})
    state.global_step = 4
    callback.on_log(args, state, control, logs={"train_runtime": 3.0, "train_loss": 2.1})
    callback.on_log(args, state, control, logs={"eval_bleu": 5.0})
    summary = dict(run.summary)
    assert summary["train/loss"] == 2.0 and summary["eval/bleu"] == 5.0 and summary["train/global_step"] == 4
    assert summary["train_runtime"] == 3.0 and "train/train_runtime" not in summary
    assert list((tmp_path / "wandb").glob("offline-run-*"))
