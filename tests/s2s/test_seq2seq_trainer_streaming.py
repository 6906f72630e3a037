"""Seq2SeqTrainer with a streamed train dataset: sortish_sampler=True is refused with a message that names the
argument and says the stream already batches by length (at construction, and when the dataset is set later)."""

import pytest
from torch.utils.data import IterableDataset

from s2s import Seq2SeqTrainer, Seq2SeqTrainingArguments
from tests.s2s.test_trainer_streaming import make_stream, write_shards
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples


def _args(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "run"),
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        save_strategy="no",
        sortish_sampler=True,
    )
    return Seq2SeqTrainingArguments(**(settings | overrides))


@pytest.fixture
def stream(tmp_path):
    return make_stream(write_shards(tmp_path / "data", make_examples(20, seed=3)))


def test_sortish_sampler_with_a_stream_names_the_argument_and_the_stream_batching(tmp_path, stream):
    with pytest.raises(ValueError) as error:
        Seq2SeqTrainer(model=ToySeq2Seq(), args=_args(tmp_path), train_dataset=stream)
    message = str(error.value)
    assert "sortish_sampler=True" in message and "StreamingTokenBatches" in message
    assert "already sorted by length" in message and "set sortish_sampler=False" in message


def test_a_stream_set_after_construction_is_refused_when_training_starts(tmp_path, stream):
    trainer = Seq2SeqTrainer(
        model=ToySeq2Seq(), args=_args(tmp_path), data_collator=ToyCollator(), train_dataset=make_examples(8)
    )
    trainer.train_dataset = stream
    with pytest.raises(ValueError, match="already sorted by length"):
        trainer.train()


def test_a_plain_iterable_dataset_is_told_it_has_no_index(tmp_path):
    class Lines(IterableDataset):
        def __iter__(self):
            return iter(make_examples(4))

    with pytest.raises(
        ValueError, match=r"sortish_sampler=True needs a map-style .* Lines is an IterableDataset"
    ):
        Seq2SeqTrainer(model=ToySeq2Seq(), args=_args(tmp_path), train_dataset=Lines())


def test_the_stream_trains_without_sortish_sampler(tmp_path, stream):
    trainer = Seq2SeqTrainer(
        model=ToySeq2Seq(),
        args=_args(tmp_path, sortish_sampler=False, predict_with_generate=False),
        data_collator=ToyCollator(),
        train_dataset=stream,
    )
    trainer.train()
    assert trainer.state.global_step == 2
