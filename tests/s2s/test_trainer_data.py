"""Data handling in the Trainer: datasets.Dataset columns, the length column, the default collator, progress
bars, a metric-driven scheduler and torch.compile."""

import datasets
import pytest
import torch

from s2s.dataloaders import RandomSampler
from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, toy_args


def hf_dataset(n=12):
    rows = make_examples(n, seed=2)
    return datasets.Dataset.from_list(
        [
            {**r, "text": "raw text", "length": 100 - i} for i, r in enumerate(rows)
        ]  # a deliberately odd length
    )


class Recording(ToyCollator):
    def __init__(self):
        super().__init__()
        self.keys, self.first_batches = set(), []

    def __call__(self, features):
        self.keys |= set(features[0])
        self.first_batches.append([f["input_ids"] for f in features])
        return super().__call__(features)


def test_unused_columns_are_removed_from_datasets(tmp_path):
    collator = Recording()
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=toy_args(tmp_path, max_steps=1),
        data_collator=collator,
        train_dataset=hf_dataset(),
    )
    trainer.train()
    assert collator.keys == {"input_ids", "labels"}  # 'text' and 'length' are not forward() arguments


def test_remove_unused_columns_false_keeps_them(tmp_path):
    class Keep(Recording):
        def __call__(self, features):
            self.keys |= set(features[0])
            return ToyCollator.__call__(self, [{k: f[k] for k in ("input_ids", "labels")} for f in features])

    collator = Keep()
    args = toy_args(tmp_path, max_steps=1, remove_unused_columns=False)
    Trainer(model=ToySeq2Seq(), args=args, data_collator=collator, train_dataset=hf_dataset()).train()
    assert {"text", "length"} <= collator.keys


def test_group_by_length_reads_the_length_column(tmp_path):
    args = toy_args(tmp_path, group_by_length=True, remove_unused_columns=False)
    trainer = Trainer(model=ToySeq2Seq(), args=args, data_collator=ToyCollator(), train_dataset=hf_dataset())
    trainer.get_train_dataloader()
    sampler = trainer._train_sampler
    assert type(sampler).__name__ == "LengthGroupedSampler"
    assert sampler.lengths.tolist() == [100 - i for i in range(12)]  # the column, not the token counts


def test_random_sampler_is_resumable_and_seeded():
    sampler = RandomSampler(10, seed=3)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.load_state_dict({"epoch": 1, "consumed": 4})
    assert list(sampler) == full[4:]
    other = RandomSampler(10, seed=3)
    other.set_epoch(2)
    assert sorted(other) == list(range(10)) and list(other) != full
    shards = [list(RandomSampler(10, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert {len(s) for s in shards} == {4} and set(sum(shards, [])) == set(range(10))


def test_default_collator_and_progress_bars(tmp_path, capsys):
    # equal lengths, so default_data_collator (no padding) can stack them
    rows = [{"input_ids": [5, 6, 7, 3], "labels": [8, 9, 3]} for _ in range(8)]
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=toy_args(tmp_path, max_steps=2, disable_tqdm=False, eval_strategy="steps", eval_steps=2),
        train_dataset=rows,
        eval_dataset=rows[:4],
    )
    trainer.train()
    err = capsys.readouterr().err
    assert "2/2" in err  # the tqdm training bar reached the end


def test_reduce_lr_on_plateau_steps_on_the_eval_metric(tmp_path):
    args = toy_args(
        tmp_path,
        max_steps=6,
        lr_scheduler_type="reduce_lr_on_plateau",
        lr_scheduler_kwargs={"patience": 0, "factor": 0.5},
        eval_strategy="steps",
        eval_steps=1,
        metric_for_best_model="score",
        greater_is_better=True,
    )
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=args,
        data_collator=ToyCollator(),
        train_dataset=make_examples(16),
        eval_dataset=make_examples(4, seed=9),
        compute_metrics=lambda pred: {"score": 1.0},  # never improves after the first evaluation
    )
    trainer.train()
    rates = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert rates[0] == pytest.approx(0.1) and rates[-1] < rates[0] / 4


def test_torch_compile_trains(tmp_path):
    args = toy_args(tmp_path, max_steps=2, torch_compile=True, torch_compile_backend="eager")
    trainer = Trainer(
        model=ToySeq2Seq(), args=args, data_collator=ToyCollator(), train_dataset=make_examples(8)
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


class FakeTrial:
    """Stands in for an optuna trial (optuna is not installed here): trial n suggests [0.5, 0.0][n]."""

    def __init__(self, number):
        self.number, self.params, self.reports = number, {}, []

    def suggest_float(self, name, low, high, log=False):
        self.params[name] = [0.5, 0.0][self.number]
        return self.params[name]

    def report(self, value, step):
        self.reports.append((step, value))


class FakeStudy:
    def optimize(self, objective, n_trials):
        self.trials = [FakeTrial(i) for i in range(n_trials)]
        for t in self.trials:
            t.value = objective(t)
        self.best_trial = min(self.trials, key=lambda t: t.value)


def fake_optuna(monkeypatch) -> FakeStudy:
    import sys
    import types

    study = FakeStudy()
    monkeypatch.setitem(sys.modules, "optuna", types.SimpleNamespace(create_study=lambda direction: study))
    return study


def learning_rate_space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 0.0, 1.0)}


def test_hyperparameter_search_runs_trials_with_fresh_models(tmp_path, monkeypatch):
    """The optuna wiring, with a stand-in for optuna (not installed here): each trial applies hp_space to a
    copy of the arguments, trains a fresh model from model_init and is scored on the eval metrics."""
    study = fake_optuna(monkeypatch)
    built = []
    trainer = Trainer(
        model_init=lambda: built.append(ToySeq2Seq()) or built[-1],
        args=toy_args(tmp_path, max_steps=3, learning_rate=0.5),
        data_collator=ToyCollator(),
        train_dataset=make_examples(12),
        eval_dataset=make_examples(4, seed=9),
    )
    best = trainer.hyperparameter_search(hp_space=learning_rate_space, n_trials=2)
    assert len(built) == 3  # one at construction, one per trial
    values = {t.params["learning_rate"]: t.value for t in study.trials}
    assert values[0.0] != values[0.5]  # each trial trained with its own learning rate
    assert best.objective == min(values.values())
    assert best.hyperparameters == {"learning_rate": min(values, key=values.get)}
    assert trainer.args.learning_rate == 0.5 and trainer.args.output_dir == str(tmp_path)  # restored


def test_hyperparameter_search_trials_checkpoint_into_their_own_folders(tmp_path, monkeypatch):
    """Each trial runs on a copy of the arguments with output_dir/run-<n>; the checkpoints follow that copy
    (the checkpointer and the distribution strategy read the trainer's current arguments)."""
    fake_optuna(monkeypatch)
    trainer = Trainer(
        model_init=lambda: ToySeq2Seq(),
        args=toy_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
        data_collator=ToyCollator(),
        train_dataset=make_examples(12),
        eval_dataset=make_examples(4, seed=9),
    )
    trainer.hyperparameter_search(hp_space=learning_rate_space, n_trials=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-0", "run-1"]
    for run in ("run-0", "run-1"):
        assert (tmp_path / run / "checkpoint-2" / "manifest.json").is_file()
    assert trainer.checkpointer.args is trainer.args and trainer.strategy.args is trainer.args  # put back


def test_past_index_feeds_mems_back(tmp_path):
    class WithMemory(ToySeq2Seq):
        def __init__(self):
            super().__init__()
            self.received = []

        def forward(self, input_ids, attention_mask=None, labels=None, mems=None):
            self.received.append(mems)
            out = super().forward(input_ids, attention_mask, labels=labels)
            return (out.loss, out.logits, torch.full((1,), float(len(self.received))))

    model = WithMemory()
    Trainer(
        model=model,
        args=toy_args(tmp_path, max_steps=3, past_index=2),
        data_collator=ToyCollator(),
        train_dataset=make_examples(12),
    ).train()
    assert model.received[0] is None and [m.item() for m in model.received[1:]] == [1.0, 2.0]
