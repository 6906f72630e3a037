"""k micro-batches of b examples train exactly like one batch of k * b (the loss is normalised by the target
tokens of the whole accumulation window), with variable-length targets and with label smoothing."""

import pytest
import torch

from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToyNoLoss, ToySeq2Seq, make_examples, params_of, toy_args


def train_params(
    tmp_path, *, batch, accumulation, model_cls=ToySeq2Seq, decoder_input_ids=False, **overrides
):
    args = toy_args(
        tmp_path / f"b{batch}x{accumulation}",
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=3,
        max_grad_norm=0.0,
        **overrides,
    )
    trainer = Trainer(
        model=model_cls(),
        args=args,
        data_collator=ToyCollator(decoder_input_ids=decoder_input_ids),
        train_dataset=make_examples(8, seed=3),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return params_of(trainer.model), losses


@pytest.mark.parametrize(
    "case",
    [
        dict(),  # the model's mean loss, times the window's token count
        dict(label_smoothing_factor=0.1),  # the trainer's own smoothed loss from the logits
        dict(decoder_input_ids=True, optim="adamw_torch", learning_rate=0.01),
        dict(model_cls=ToyNoLoss),  # a model that returns no loss
    ],
    ids=["model-loss", "label-smoothing", "adamw-decoder-inputs", "no-model-loss"],
)
def test_four_by_two_equals_one_by_eight(tmp_path, case):
    targets = [len(e["labels"]) for e in make_examples(8, seed=3)]
    assert len(set(targets)) > 2  # variable-length targets: dividing by accumulation steps would be wrong

    whole, whole_losses = train_params(tmp_path, batch=8, accumulation=1, **case)
    split, split_losses = train_params(tmp_path, batch=2, accumulation=4, **case)
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=0)
    assert split_losses == pytest.approx(whole_losses, abs=1e-5)
    initial = params_of(ToySeq2Seq())
    assert any(not torch.allclose(initial[n], whole[n]) for n in whole)  # training moved the weights


def test_dividing_by_accumulation_steps_would_differ(tmp_path):
    """The test above can fail: averaging per-micro-batch means (Hugging Face's fallback) gives other weights."""

    class MeanOfMeansTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch):
            model.train()
            loss = model(**self._prepare_inputs(inputs)).loss / self.args.gradient_accumulation_steps
            loss.backward()
            return loss.detach() * num_items_in_batch

    whole, _ = train_params(tmp_path, batch=8, accumulation=1)
    args = toy_args(
        tmp_path / "mean", per_device_train_batch_size=2, gradient_accumulation_steps=4, max_grad_norm=0.0
    )
    trainer = MeanOfMeansTrainer(
        model=ToySeq2Seq(), args=args, data_collator=ToyCollator(), train_dataset=make_examples(8, seed=3)
    )
    trainer.train()
    differs = [not torch.allclose(trainer.model.state_dict()[n], whole[n], atol=1e-5) for n in whole]
    assert any(differs)
