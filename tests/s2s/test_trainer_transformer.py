"""The Trainer with the project's own Transformer and DataCollatorForSeq2Seq (tiny, CPU)."""

import random
from types import SimpleNamespace

import torch

from s2s.data_collator import DataCollatorForSeq2Seq
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import params_of, toy_args

TOKENIZER = SimpleNamespace(pad_token_id=0, padding_side="right")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = TransformerConfig.preset(
        "tiny",
        vocab_size=20,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        num_heads=2,
        ffn_dim=64,
        dropout=0.0,
    )
    return TransformerForConditionalGeneration(config)


def copy_examples(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(4, 20) for _ in range(rng.randint(2, 8))] + [3]
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def collator():
    return DataCollatorForSeq2Seq(TOKENIZER, decoder_start_token_id=2)


def test_accumulation_equivalence_with_the_transformer(tmp_path, smoothing=0.1):
    # (without smoothing, and with a model's own mean loss: tests/s2s/test_trainer_accumulation.py)
    results = []
    for batch, accumulation in ((8, 1), (2, 4)):
        args = toy_args(
            tmp_path / f"{batch}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=3,
            optim="sgd",  # Adam's g / sqrt(v) magnifies float reassociation noise on near-zero gradients
            learning_rate=0.5,
            label_smoothing_factor=smoothing,
        )
        trainer = Trainer(
            model=tiny_model(), args=args, data_collator=collator(), train_dataset=copy_examples(8)
        )
        trainer.train()
        results.append(params_of(trainer.model))
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], atol=1e-5, rtol=0)


def test_transformer_learns_copy_and_resumes(tmp_path):
    args = toy_args(
        tmp_path,
        per_device_train_batch_size=8,
        max_steps=10,
        optim="adamw_torch",
        learning_rate=1e-2,
        logging_steps=5,
        save_strategy="steps",
        save_steps=5,
        group_by_length=True,
    )
    trainer = Trainer(
        model=tiny_model(),
        args=args,
        data_collator=collator(),
        tokenizer=None,
        train_dataset=copy_examples(40),
        eval_dataset=copy_examples(16, seed=1),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.8 * before
    assert (tmp_path / "checkpoint-5" / "config.json").is_file()

    resumed = Trainer(
        model=tiny_model(seed=5),
        args=toy_args(
            tmp_path / "r", **{**args.to_dict(), "output_dir": str(tmp_path / "r"), "logging_dir": None}
        ),
        data_collator=collator(),
        train_dataset=copy_examples(40),
        eval_dataset=copy_examples(16, seed=1),
    )
    resumed.train(resume_from_checkpoint=tmp_path / "checkpoint-5")
    for name, value in params_of(trainer.model).items():
        torch.testing.assert_close(params_of(resumed.model)[name], value, atol=1e-6, rtol=0)


def test_gradient_checkpointing_with_the_transformer(tmp_path):
    trainer = Trainer(
        model=tiny_model(),
        args=toy_args(tmp_path, gradient_checkpointing=True, max_steps=2),
        data_collator=collator(),
        train_dataset=copy_examples(8),
    )
    assert trainer.train().global_step == 2
