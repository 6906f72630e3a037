"""The trainer's length-aware samplers read the lengths a dataset stores (``length_column_name``) instead of
measuring its ids, and that column never reaches the model: the sampler is built before the columns the
model does not take are dropped, and the length column is dropped even for a model whose forward takes
**kwargs (remove_unused_columns=False still hands every column to the collator, as test_trainer_data
checks)."""

import datasets
import numpy as np
import pytest
import torch

from s2s import Seq2SeqTrainer, Seq2SeqTrainingArguments
from s2s.trainer import Trainer
from samplers import LengthGroupedSampler, SortishSampler, TokenBudgetBatchSampler
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, toy_args

N = 40


def measured(examples) -> np.ndarray:
    return np.array([[len(e["input_ids"]), len(e["labels"])] for e in examples])


def with_stored_lengths(examples, stored) -> datasets.Dataset:
    columns = {key: [e[key] for e in examples] for key in ("input_ids", "labels")}
    return datasets.Dataset.from_dict(columns | {"length": stored})


@pytest.fixture
def examples():
    return make_examples(N, seed=4)


@pytest.fixture
def stored(examples):
    # Deliberately not the ids' lengths (each side 3 tokens longer, and the sides swapped): a sampler that
    # measured the ids would hold other lengths.
    return (measured(examples)[:, ::-1] + 3).tolist()


class KeysCollator(ToyCollator):
    """Records the keys of every example it collates."""

    def __init__(self) -> None:
        super().__init__()
        self.keys = set()

    def __call__(self, features):
        for feature in features:
            self.keys |= set(feature)
        return super().__call__(features)


class KwargsModel(ToySeq2Seq):
    """A model whose forward takes ``**kwargs`` (as some Hugging Face models' do): column pruning keeps every
    column for it, so only the length column's own removal keeps ``length`` out."""

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None, **kwargs):
        if kwargs:
            raise AssertionError(f"the model was given {sorted(kwargs)}")
        return super().forward(input_ids, attention_mask, decoder_input_ids, labels)


@pytest.mark.parametrize(
    ("option", "sampler_type"),
    [
        ({"max_tokens_per_batch": 40}, TokenBudgetBatchSampler),
        ({"group_by_length": True}, LengthGroupedSampler),
    ],
)
def test_the_sampler_reads_the_stored_lengths(tmp_path, examples, stored, option, sampler_type):
    collator = KeysCollator()
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=toy_args(tmp_path, **option),
        data_collator=collator,
        train_dataset=with_stored_lengths(examples, stored),
    )
    loader = trainer.get_train_dataloader()
    assert isinstance(trainer._train_sampler, sampler_type)
    assert (trainer._train_sampler.lengths == np.array(stored)).all()
    assert not (trainer._train_sampler.lengths == measured(examples)).all()
    next(iter(loader))
    assert collator.keys == {"input_ids", "labels"}  # the length column was read, then dropped


def test_the_token_budget_follows_the_stored_lengths(tmp_path, examples, stored):
    """The budget is spent on the stored costs: with every stored pair set to (10, 10), 40 tokens make
    batches of exactly 4 examples, whatever the ids' lengths."""
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=toy_args(tmp_path, max_tokens_per_batch=40),
        data_collator=ToyCollator(),
        train_dataset=with_stored_lengths(examples, [[10, 10]] * N),
    )
    assert {len(batch) for batch in trainer.get_train_dataloader().batch_sampler} == {4}


def test_the_length_column_never_reaches_a_model_that_takes_kwargs(tmp_path, examples, stored):
    collator = KeysCollator()
    trainer = Trainer(
        model=KwargsModel(),
        args=toy_args(tmp_path, max_tokens_per_batch=40),
        data_collator=collator,
        train_dataset=with_stored_lengths(examples, stored),
    )
    trainer.train()
    assert trainer.state.global_step == 3 and collator.keys == {"input_ids", "labels"}


def test_sortish_sampler_reads_the_stored_lengths(tmp_path, examples):
    stored = [int(n) for n in measured(examples)[:, 0][::-1]]  # one int per example, not the ids' lengths
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2, sortish_sampler=True,
        per_device_train_batch_size=4, save_strategy="no",
    )  # fmt: skip
    trainer = Seq2SeqTrainer(
        model=ToySeq2Seq(),
        args=args,
        data_collator=ToyCollator(),
        train_dataset=with_stored_lengths(examples, stored),
    )
    trainer.get_train_dataloader()
    assert isinstance(trainer._train_sampler, SortishSampler)
    assert trainer._train_sampler.lengths.tolist() == stored


def test_a_model_that_takes_the_length_column_gets_it(tmp_path, examples, stored):
    class TakesLength(ToySeq2Seq):
        def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None, length=None):
            assert length is not None
            return super().forward(input_ids, attention_mask, decoder_input_ids, labels)

    class PassLength(ToyCollator):
        def __call__(self, features):
            batch = super().__call__(features)
            batch["length"] = torch.tensor([f["length"] for f in features])
            return batch

    trainer = Trainer(
        model=TakesLength(),
        args=toy_args(tmp_path, max_tokens_per_batch=40),
        data_collator=PassLength(),
        train_dataset=with_stored_lengths(examples, stored),
    )
    trainer.train()
    assert trainer.state.global_step == 3
