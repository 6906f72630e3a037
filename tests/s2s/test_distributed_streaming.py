"""A streamed dataset under torch.distributed (2 CPU processes, gloo): each rank reads its own shards, the
checkpoint keeps both ranks' positions, and a resumed run continues each rank's batches exactly (same
parameters as the uninterrupted run). The shards hold different numbers of examples, so the ranks' epochs
end at different steps: reading the stream epoch after epoch keeps them in step anyway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s2s.checkpointing import read_json
from s2s.trainer import Trainer
from samplers.streaming import ShardLines, StreamingTokenBatches
from tests.s2s.test_distributed import WORLD, run_world
from tests.s2s.test_trainer_toys import (
    RecordingCollator,
    ToySeq2Seq,
    make_examples,
    params_of,
    toy_args,
)

pytestmark = pytest.mark.distributed

SHARD_SIZES = (9, 17, 6, 14)


def write_shards(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows, paths, start = make_examples(sum(SHARD_SIZES), seed=3), [], 0
    for k, size in enumerate(SHARD_SIZES):
        path = folder / f"train-{k}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[start : start + size]), encoding="utf-8")
        paths.append(path)
        start += size
    return paths


def _train(rank: int, out: Path, directory: Path, resume: Path | None) -> tuple[Trainer, list]:
    seen: list = []

    stream = StreamingTokenBatches(
        sorted((out / "data").glob("*.jsonl")),
        read_shard=ShardLines(json.loads),
        tokenize=None,
        max_tokens=24,
        window_size=6,
        buffer_size=12,
        num_replicas=WORLD,
        rank=rank,
    )
    args = toy_args(
        directory,
        max_steps=9,
        save_strategy="steps",
        save_steps=4,
        optim="adamw_torch",
        learning_rate=0.02,
        ddp_backend="gloo",
    )
    trainer = Trainer(
        model=ToySeq2Seq(dropout=0.1), args=args, data_collator=RecordingCollator(seen), train_dataset=stream
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, seen


def _scenario(rank: int, out: Path) -> None:
    straight, seen_straight = _train(rank, out, out / "straight", None)
    resumed, seen_resumed = _train(rank, out, out / "resumed", out / "straight" / "checkpoint-4")
    same = all(
        torch.allclose(a, b, atol=1e-6, rtol=0)
        for a, b in zip(params_of(straight.model).values(), params_of(resumed.model).values(), strict=True)
    )
    record = {"straight": seen_straight, "resumed": seen_resumed, "same_params": same}
    (out / f"stream_{rank}.json").write_text(json.dumps(record))


def test_a_resumed_distributed_stream_continues_each_ranks_batches(tmp_path):
    write_shards(tmp_path / "data")
    run_world(_scenario, tmp_path)
    saved = read_json(tmp_path / "straight" / "checkpoint-4" / "sampler.json")
    assert [s["rank"] for s in saved["stream"]] == [0, 1]
    runs = [json.loads((tmp_path / f"stream_{rank}.json").read_text()) for rank in range(WORLD)]
    for rank, run in enumerate(runs):
        assert len(run["straight"]) == 9 and run["resumed"] == run["straight"][4:], f"rank {rank}"
        assert run["same_params"], f"rank {rank}: resumed parameters differ from the uninterrupted run"
    # Each rank read its own shards: no example of the first epoch on both.
    firsts = [{tuple(e) for batch in run["straight"][:3] for e in batch} for run in runs]
    assert not firsts[0] & firsts[1]
