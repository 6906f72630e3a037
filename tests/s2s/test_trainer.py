"""Trainer behaviour: best checkpoint kept under save_total_limit, early stopping (also across a resume),
non-finite steps skipped/counted/stopped, logging, model_init, auto_find_batch_size and refusals."""

import json
import math

import pytest
import torch

from s2s.callbacks import EarlyStoppingCallback, TrainerCallback
from s2s.checkpointing import load_model_weights
from s2s.trainer import NonFiniteLossError, Trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, params_of, toy_args


def scripted_metric(values):
    """compute_metrics returning the next scripted value at each evaluation."""
    it = iter(values)
    return lambda pred: {"score": next(it)}


def make_trainer(
    tmp_path, *, examples=16, model=None, callbacks=(), compute_metrics=None, collator=None, **overrides
):
    return Trainer(
        model=model or ToySeq2Seq(),
        args=toy_args(tmp_path, **overrides),
        data_collator=collator or ToyCollator(),
        train_dataset=make_examples(examples, seed=1),
        eval_dataset=make_examples(4, seed=2),
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
    )


def test_save_total_limit_keeps_the_best_and_loads_it_at_the_end(tmp_path):
    trainer = make_trainer(
        tmp_path,
        max_steps=5,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        compute_metrics=scripted_metric([0.5, 0.9, 0.3, 0.2, 0.1]),
    )
    trainer.train()
    kept = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-5"]
    assert trainer.state.best_metric == 0.9 and trainer.state.best_global_step == 2
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-2")
    best = ToySeq2Seq(seed=99)
    load_model_weights(best, tmp_path / "checkpoint-2")
    final = params_of(trainer.model)
    for name, value in params_of(best).items():
        torch.testing.assert_close(final[name], value)
    saved = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())
    assert saved["best_model_checkpoint"].endswith("checkpoint-2")


def early_stopping_run(tmp_path, *, callbacks=(), resume=None, scores=None):
    trainer = make_trainer(
        tmp_path,
        max_steps=20,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        metric_for_best_model="score",
        compute_metrics=scripted_metric(scores or [0.5, 0.6, 0.55, 0.58, 0.7, 0.1, 0.2, 0.3]),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=3), *callbacks],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_early_stopping_stops_on_time(tmp_path):
    # best 0.6 at step 2; 0.55, 0.58 do not beat it; 0.7 at step 5 does; 0.1, 0.2, 0.3 -> stop at step 8
    trainer = early_stopping_run(tmp_path)
    assert trainer.state.global_step == 8


def test_early_stopping_counter_survives_resume(tmp_path):
    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 7:
                control.should_training_stop = True

    first = early_stopping_run(tmp_path, callbacks=[Crash()])
    assert first.state.global_step == 7
    saved = json.loads((tmp_path / "checkpoint-7" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["EarlyStoppingCallback"]["patience_counter"] == 2
    # A resumed run evaluates once more (0.3 at step 8) and must stop right there, not 3 evaluations later.
    resumed = early_stopping_run(tmp_path, resume=tmp_path / "checkpoint-7", scores=[0.3, 0.2, 0.1, 0.05])
    assert resumed.state.global_step == 8


class PoisonCollator(ToyCollator):
    """Batches holding token 23 in their source give a NaN loss through the model below."""


class NaNOnPoison(ToySeq2Seq):
    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None):
        out = super().forward(input_ids, attention_mask, decoder_input_ids, labels)
        if (input_ids == 23).any():
            out.loss = out.loss * float("nan")
        return out


def poisoned_examples(n, poison):
    examples = make_examples(n, seed=5)
    for i, e in enumerate(examples):
        e["input_ids"] = [t if t != 23 else 22 for t in e["input_ids"]]
        if i in poison:
            e["input_ids"][0] = 23
    return examples


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    trainer = Trainer(
        model=NaNOnPoison(),
        args=toy_args(tmp_path, per_device_train_batch_size=1, max_steps=4, optim="sgd", data_seed=0),
        data_collator=ToyCollator(),
        train_dataset=poisoned_examples(4, poison={1}),
    )
    before = {}

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            before[state.global_step + 1] = params_of(model)

    trainer.add_callback(Snapshot())
    output = trainer.train()
    after_all = params_of(trainer.model)
    assert trainer.state.nonfinite_steps == 1 and output.metrics["nonfinite_steps"] == 1
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all(math.isfinite(h["loss"]) for h in logged)  # logging_nan_inf_filter
    assert len(logged) == 3  # the skipped step contributes no loss to its log
    assert all(torch.isfinite(v).all() for v in after_all.values())
    # exactly one step left the weights unchanged
    steps = sorted(before)
    unchanged = [
        s
        for s, nxt in zip(steps, [*steps[1:], None])
        if all(torch.equal(before[s][k], (before[nxt] if nxt else after_all)[k]) for k in after_all)
    ]
    assert len(unchanged) == 1


def test_training_stops_after_consecutive_nonfinite_steps(tmp_path):
    trainer = Trainer(
        model=NaNOnPoison(),
        args=toy_args(
            tmp_path, per_device_train_batch_size=2, max_steps=10, max_consecutive_nonfinite_steps=3
        ),
        data_collator=ToyCollator(),
        train_dataset=poisoned_examples(8, poison=set(range(8))),
    )
    with pytest.raises(NonFiniteLossError, match="3 updates in a row"):
        trainer.train()
    assert trainer.state.global_step == 2 and trainer.state.nonfinite_steps == 3


def test_logs_loss_grad_norm_lr_and_jsonl(tmp_path):
    trainer = make_trainer(
        tmp_path, max_steps=4, logging_steps=2, report_to="jsonl", logging_dir=str(tmp_path / "logs")
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == [2, 4]
    assert {"grad_norm", "learning_rate", "epoch", "padding_efficiency"} <= set(logged[0])
    lines = [json.loads(line) for line in (tmp_path / "logs" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines if "loss" in r] == [h["loss"] for h in logged]
    assert any("train_runtime" in r for r in lines)


def test_model_init_gives_a_fresh_model_per_train(tmp_path):
    built = []

    def model_init():
        built.append(ToySeq2Seq())
        return built[-1]

    trainer = Trainer(
        model_init=model_init,
        args=toy_args(tmp_path, max_steps=2),
        data_collator=ToyCollator(),
        train_dataset=make_examples(8),
    )
    trainer.train()
    first = params_of(trainer.model)
    trainer.train()
    assert len(built) == 3 and trainer.model is built[-1]
    for name, value in first.items():
        torch.testing.assert_close(params_of(trainer.model)[name], value)  # same seed, same result


def test_auto_find_batch_size_halves_on_out_of_memory(tmp_path):
    class SmallMemory(ToySeq2Seq):
        def forward(self, input_ids, **kwargs):
            if input_ids.shape[0] > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
            return super().forward(input_ids, **kwargs)

    trainer = make_trainer(
        tmp_path, model=SmallMemory(), per_device_train_batch_size=8, auto_find_batch_size=True
    )
    trainer.train()
    assert trainer._train_batch_size == 2 and trainer.state.global_step == 3


def test_fractional_epochs_and_skip_memory_metrics(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=-1, num_train_epochs=1.5, skip_memory_metrics=False)
    out = trainer.train()
    assert out.global_step == 6  # 16 examples / 4 = 4 updates per epoch; 1.5 epochs -> 6
    assert out.metrics["train_mem_cpu_peak"] > 0
    assert out.metrics["train_tokens_per_second"] > 0


def test_gradient_checkpointing_needs_model_support(tmp_path):
    with pytest.raises(ValueError, match="gradient_checkpointing_enable"):
        make_trainer(tmp_path, gradient_checkpointing=True)


def test_hyperparameter_search_without_optuna_says_how_to_install(tmp_path):
    pytest.importorskip("s2s.trainer")
    try:
        import optuna  # noqa: F401

        pytest.skip("optuna is installed")
    except ImportError:
        pass
    trainer = make_trainer(tmp_path)
    with pytest.raises(ImportError, match="optuna"):
        trainer.hyperparameter_search(n_trials=1)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    trainer = make_trainer(tmp_path, bf16=True, bf16_full_eval=True, max_steps=2)
    trainer.train()
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    assert next(trainer.model.parameters()).dtype == torch.bfloat16  # full bf16 evaluation casts the model
