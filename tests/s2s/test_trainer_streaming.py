"""A Trainer on a streamed dataset (StreamingTokenBatches): the stream is read epoch after epoch until
max_steps, a checkpoint keeps the stream's position, and a run stopped and resumed ends exactly like the
uninterrupted run (same batches, none re-read; same losses and parameters)."""

import json
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from s2s.checkpointing import read_json
from s2s.data_position import DataPosition
from s2s.trainer import Trainer
from samplers.streaming import ShardLines, StreamingTokenBatches
from tests.s2s.test_trainer_resume import StopAt, losses
from tests.s2s.test_trainer_toys import (
    RecordingCollator,
    ToySeq2Seq,
    make_examples,
    params_of,
    toy_args,
)

NUM_EXAMPLES = 45


def write_shards(folder, examples, shards=3):
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"train-{k}.jsonl" for k in range(shards)]
    for k, path in enumerate(paths):
        path.write_text("".join(json.dumps(e) + "\n" for e in examples[k::shards]), encoding="utf-8")
    return paths


def make_stream(paths, **options):
    settings = dict(max_tokens=24, window_size=8, buffer_size=16, seed=5)
    return StreamingTokenBatches(
        paths, read_shard=ShardLines(json.loads), tokenize=None, **(settings | options)
    )


def make_trainer(output_dir, paths, *, callbacks=(), **overrides):
    settings = dict(
        gradient_accumulation_steps=2,
        max_steps=14,
        save_strategy="steps",
        save_steps=5,
        optim="adamw_torch",
        learning_rate=0.02,
        warmup_steps=2,
    )
    seen = []

    trainer = Trainer(
        model=ToySeq2Seq(dropout=0.1),
        args=toy_args(output_dir, **(settings | overrides)),
        data_collator=RecordingCollator(seen),
        train_dataset=make_stream(paths),
        callbacks=list(callbacks),
    )
    return trainer, seen


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path / "data", make_examples(NUM_EXAMPLES, seed=11))


def test_the_stream_is_read_epoch_after_epoch_until_max_steps(tmp_path, shards):
    one_epoch = list(make_stream(shards))
    trainer, seen = make_trainer(tmp_path / "run", shards, save_strategy="no")
    trainer.train()
    assert trainer.state.global_step == 14
    assert len(seen) == 28 > len(one_epoch)  # 2 micro-batches per update, past the first epoch
    first = sorted(example for batch in seen[: len(one_epoch)] for example in batch)
    assert first == sorted(tuple(e["input_ids"]) for e in make_examples(NUM_EXAMPLES, seed=11))
    assert seen[: len(one_epoch)] == [tuple(tuple(f["input_ids"]) for f in b) for b in one_epoch]


@pytest.mark.parametrize("stop", [5, 10])  # mid-epoch 0; in epoch 1
def test_resume_equals_uninterrupted(tmp_path, shards, stop):
    straight, straight_batches = make_trainer(tmp_path / "straight", shards)
    straight.train()

    stopped, first_batches = make_trainer(tmp_path / "run", shards, callbacks=[StopAt(stop)])
    stopped.train()
    checkpoint = tmp_path / "run" / f"checkpoint-{stop}"
    saved = read_json(checkpoint / "sampler.json")
    assert saved["micro_batches"] == 2 * stop and len(saved["stream"]) == 1

    resumed, later_batches = make_trainer(tmp_path / "run", shards)
    resumed.train(resume_from_checkpoint=checkpoint)

    assert resumed.state.global_step == 14
    assert first_batches + later_batches == straight_batches  # no batch re-read, none skipped
    assert losses(resumed) == losses(straight)
    final, expected = params_of(resumed.model), params_of(straight.model)
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], atol=1e-6, rtol=0)


def test_a_checkpoint_without_the_streams_position_says_how_to_go_on(shards):
    position = DataPosition()
    position.start(None, batch_size=8)
    position.load_state_dict({"epoch": 0, "micro_batches": 10, "train_batch_size": 8}, ignore_data_skip=False)
    loader = DataLoader(make_stream(shards), batch_size=None)
    with pytest.raises(ValueError, match="holds no position of the streamed dataset.*ignore_data_skip=True"):
        position.epoch_batches(loader, epoch=0, done=10, batches_per_epoch=sys.maxsize, data_seed=0)


def test_a_checkpoint_of_another_process_count_is_refused(shards):
    position = DataPosition()
    position.start(None, batch_size=8)
    saved = {"epoch": 0, "micro_batches": 4, "train_batch_size": 8, "stream": [{}, {}]}
    position.load_state_dict(saved, ignore_data_skip=False)
    loader = DataLoader(make_stream(shards), batch_size=None)
    with pytest.raises(ValueError, match="stream positions of 2 processes, this run has 1"):
        position.epoch_batches(loader, epoch=0, done=4, batches_per_epoch=sys.maxsize, data_seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataloader_num_workers": 1}, "dataloader_num_workers=0"),
        ({"group_by_length": True}, "group_by_length does not apply"),
        ({"max_tokens_per_batch": 32}, "max_tokens_per_batch=32 but StreamingTokenBatches cuts batches of"),
    ],
)
def test_settings_a_stream_cannot_honour_are_refused(tmp_path, shards, overrides, message):
    trainer, _ = make_trainer(tmp_path / "run", shards, save_strategy="no", **overrides)
    with pytest.raises(ValueError, match=message):
        trainer.train()


def test_a_stream_built_for_another_process_split_is_refused(tmp_path, shards):
    trainer, _ = make_trainer(tmp_path / "run", shards, save_strategy="no")
    trainer.train_dataset = make_stream(shards, num_replicas=2, rank=1)
    with pytest.raises(ValueError, match="built for num_replicas=2, rank=1 but this process is rank 0 of 1"):
        trainer.train()
