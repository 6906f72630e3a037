"""A run stopped after checkpoint-3 and resumed from it ends exactly like the uninterrupted run: same
parameters, same logged losses, same batches (default sampler, group_by_length, max_tokens_per_batch)."""

import pytest
import torch

from s2s.callbacks import TrainerCallback
from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import (
    RecordingCollator,
    ToySeq2Seq,
    make_examples,
    params_of,
    toy_args,
)

SAMPLING = {
    "random": {},
    "group_by_length": {"group_by_length": True},
    "token_budget": {"max_tokens_per_batch": 24},
}


class StopAt(TrainerCallback):
    """Kills the run right after the step-``step`` checkpoint was written (as a crash would)."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def make_trainer(output_dir, sampling, *, callbacks=(), **overrides):
    settings = dict(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=6,
        save_strategy="steps",
        save_steps=3,
        optim="adamw_torch",
        learning_rate=0.02,
        warmup_steps=2,
    )
    args = toy_args(output_dir, **(settings | SAMPLING[sampling] | overrides))
    seen = []

    # 14 examples, 7 micro-batches of 2: step 6 runs into the second epoch, checkpoint-3 is mid-epoch.
    trainer = Trainer(
        model=ToySeq2Seq(dropout=0.1),  # dropout: the RNG state must be restored too
        args=args,
        data_collator=RecordingCollator(seen),
        train_dataset=make_examples(14, seed=7),
        callbacks=list(callbacks),
    )
    return trainer, seen


def losses(trainer):
    return [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("sampling", list(SAMPLING))
def test_resume_equals_uninterrupted(tmp_path, sampling):
    straight, straight_batches = make_trainer(tmp_path / "straight", sampling)
    straight.train()

    stopped, first_batches = make_trainer(tmp_path / "run", sampling, callbacks=[StopAt(3)])
    stopped.train()
    assert stopped.state.global_step == 3
    assert (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").is_file()

    resumed, later_batches = make_trainer(tmp_path / "run", sampling)
    resumed.train(resume_from_checkpoint=tmp_path / "run" / "checkpoint-3")

    assert resumed.state.global_step == 6
    assert first_batches + later_batches == straight_batches  # no batch re-read, none skipped
    assert losses(resumed) == losses(straight)
    final, expected = params_of(resumed.model), params_of(straight.model)
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], atol=1e-6, rtol=0)


def test_resume_true_picks_the_newest_checkpoint(tmp_path):
    first, _ = make_trainer(tmp_path, "random", callbacks=[StopAt(3)])
    first.train()
    resumed, batches = make_trainer(tmp_path, "random")
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    # Steps 4-6: the last micro-batch of epoch 0 (7 = 2+2+2+1), then 2 + 2: nothing before step 3 re-read.
    assert len(batches) == 5


def test_ignore_data_skip_restarts_the_epoch(tmp_path):
    first, first_batches = make_trainer(tmp_path, "random", callbacks=[StopAt(3)])
    first.train()
    resumed, batches = make_trainer(tmp_path, "random", ignore_data_skip=True)
    resumed.train(resume_from_checkpoint=True)
    assert batches[:6] == first_batches[:6]  # epoch 0 from its start again


def test_refuses_to_train_over_checkpoints(tmp_path):
    first, _ = make_trainer(tmp_path, "random", callbacks=[StopAt(3)])
    first.train()
    second, _ = make_trainer(tmp_path, "random")
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        second.train()
    third, _ = make_trainer(tmp_path, "random", overwrite_output_dir=True)
    assert third.train().global_step == 6


def test_sigterm_saves_after_the_current_update_and_resumes_exactly(tmp_path):
    import os
    import signal

    from s2s.signals import TrainingInterrupted

    class SendSigterm(TrainerCallback):
        def on_substep_end(self, args, state, control, **kwargs):
            if state.global_step == 4:  # mid-window of update 5: the update must still complete
                os.kill(os.getpid(), signal.SIGTERM)

    straight, _ = make_trainer(tmp_path / "straight", "random", save_steps=100)
    straight.train()
    interrupted, _ = make_trainer(tmp_path / "run", "random", save_steps=100, callbacks=[SendSigterm()])
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.train()
    assert info.value.step == 5 and info.value.checkpoint == tmp_path / "run" / "checkpoint-5"
    resumed, _ = make_trainer(tmp_path / "run", "random", save_steps=100)
    resumed.train(resume_from_checkpoint=True)
    assert losses(resumed) == losses(straight)
    for name, value in params_of(straight.model).items():
        torch.testing.assert_close(params_of(resumed.model)[name], value, atol=1e-6, rtol=0)
