"""torch.distributed on 2 CPU processes (gloo), set up from the torchrun environment variables.

Each test starts 2 worker processes that run a small scenario and write what they saw; the test (in the
parent process) compares that with the same work done in one process:

- DDP: 2 processes x batch 2 x accumulation 2 train exactly like 1 process x batch 4 x accumulation 2 and
  1 process x batch 8 (variable-length targets: the token count is all-reduced);
- the generic Trainer's sharded evaluation returns each example once, in dataset order;
- a resumed distributed run continues each rank's data order and RNG (dropout on) exactly;
- FSDP trains the project's Transformer, saves, resumes (equal to uninterrupted), and evaluates with
  ``predict_with_generate`` over 5 examples (ranks generate for a different number of batches and steps)
  returning exactly 5 predictions in order, with the metrics of 1 process.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s2s.callbacks import TrainerCallback
from s2s.data_collator import DataCollatorForSeq2Seq
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.seq2seq_trainer import Seq2SeqTrainer
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments
from s2s.trainer import Trainer

pytestmark = pytest.mark.distributed

WORLD = 2
TOKENIZER = SimpleNamespace(pad_token_id=0, padding_side="right")


# ------------------------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, scenario, port: int, out: str) -> None:
    """What torchrun does for each process: the environment the Trainer's process-group set-up reads."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        scenario(rank, Path(out))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_world(scenario, out: Path, *, timeout: float = 240.0) -> None:
    """Run ``scenario(rank, out)`` in 2 processes; fail (instead of hanging) if they do not finish."""
    context = mp.start_processes(
        _entry, args=(scenario, _free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(
                f"{scenario.__name__}: the distributed workers did not finish in {timeout:.0f} s (hang?)"
            )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- the pieces
def tiny_model(*, dropout: float = 0.0) -> TransformerForConditionalGeneration:
    torch.manual_seed(0)
    config = TransformerConfig.preset(
        "tiny",
        vocab_size=20,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        num_heads=2,
        ffn_dim=32,
        dropout=dropout,
    )
    return TransformerForConditionalGeneration(config)


def examples(n: int, *, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = [rng.randrange(4, 20) for _ in range(rng.randint(1, 7))] + [3]
        rows.append({"input_ids": ids, "labels": ids[::-1][1:] + [3]})  # targets of varying length
    return rows


class Recording(torch.utils.data.Dataset):
    """A dataset that remembers which indices this process read, in order."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows, self.seen = rows, []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        self.seen.append(int(i))
        return self.rows[i]


def collator() -> DataCollatorForSeq2Seq:
    return DataCollatorForSeq2Seq(TOKENIZER, decoder_start_token_id=2)


def make_args(out: Path, **overrides) -> Seq2SeqTrainingArguments:
    defaults = dict(
        output_dir=str(out),
        report_to="none",
        disable_tqdm=True,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        optim="sgd",  # Adam's g / sqrt(v) magnifies float reassociation noise on near-zero gradients
        learning_rate=0.5,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        ddp_timeout=120,  # a hang fails in 2 minutes instead of 30
    )
    return Seq2SeqTrainingArguments(**(defaults | overrides))


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def argmax_logits(logits, labels):
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def order_sensitive_metrics(prediction) -> dict[str, float]:
    """Metrics that change if a row is missing, repeated or moved."""
    preds = np.asarray(prediction.predictions)
    labels = np.asarray(prediction.label_ids)
    weights = np.arange(1, len(preds) + 1)
    return {
        "rows": float(len(preds)),
        "checksum": float((weights * preds.reshape(len(preds), -1).sum(1)).sum()),
        "label_checksum": float((weights * np.where(labels < 0, 0, labels).sum(1)).sum()),
    }


def label_position_metrics(prediction) -> dict[str, float]:
    """``order_sensitive_metrics`` of teacher-forced argmax ids at the label positions only (what a model
    predicts at padding depends on how much padding its batch had)."""
    labels = np.asarray(prediction.label_ids)
    preds = np.where(labels >= 0, np.asarray(prediction.predictions), 0)
    return order_sensitive_metrics(SimpleNamespace(predictions=preds, label_ids=labels))


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


# ------------------------------------------------------------------------------------------- DDP
class CountGradientAllReduces(TrainerCallback):
    """Counts DDP's gradient all-reduces (one per bucket per synchronised backward) with a comm hook."""

    def __init__(self) -> None:
        self.trainer, self.calls = None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def hook(process_group, bucket):
            self.calls += 1
            return allreduce_hook(process_group, bucket)

        self.trainer.model_wrapped.register_comm_hook(None, hook)


def _ddp_scenario(rank: int, out: Path) -> None:
    # 1. 2 processes x batch 2 x accumulation 2, three updates; then sharded teacher-forced prediction.
    counter = CountGradientAllReduces()
    trainer = Trainer(
        model=tiny_model(),
        args=make_args(out / "ddp", gradient_accumulation_steps=2, ddp_bucket_cap_mb=64),  # one bucket
        data_collator=collator(),
        train_dataset=examples(24),
        compute_metrics=label_position_metrics,
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=[counter],
    )
    counter.trainer = trainer
    assert dist.is_initialized() and dist.get_world_size() == WORLD  # set up from the environment
    trainer.train()
    assert type(trainer.model_wrapped).__name__ == "DistributedDataParallel"
    prediction = trainer.predict(examples(5, seed=9))
    _write(out / f"all_reduces_{rank}.json", counter.calls)
    if rank == 0:
        torch.save(params_of(trainer.model), out / "ddp.pt")
        np.save(out / "ddp_predictions.npy", prediction.predictions)
        _write(out / "ddp_metrics.json", prediction.metrics)

    # 2. Exact resume with dropout on: each rank's data order and RNG continue where they were.
    data = Recording(examples(12, seed=3))

    def run(directory: Path, resume: Path | None) -> Trainer:
        data.seen.clear()
        t = Trainer(
            model=tiny_model(dropout=0.2),
            args=make_args(
                directory,
                max_steps=4,
                save_strategy="steps",
                save_steps=2,
                optim="adamw_torch",
                learning_rate=1e-2,
            ),
            data_collator=collator(),
            train_dataset=data,
        )
        t.train(resume_from_checkpoint=resume)
        return t

    straight = run(out / "straight", None)
    seen_straight = list(data.seen)
    resumed = run(out / "resumed", out / "straight" / "checkpoint-2")
    seen_resumed = list(data.seen)
    same = all(
        torch.equal(a, b)
        for a, b in zip(params_of(straight.model).values(), params_of(resumed.model).values())
    )
    _write(
        out / f"resume_{rank}.json", {"straight": seen_straight, "resumed": seen_resumed, "same_params": same}
    )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run_world(_ddp_scenario, out)
    return out


def test_ddp_equals_one_process_with_the_doubled_batch(ddp_run, tmp_path):
    distributed = torch.load(ddp_run / "ddp.pt")
    for name, (batch, accumulation) in {"4x2": (4, 2), "8x1": (8, 1)}.items():
        trainer = Trainer(
            model=tiny_model(),
            args=make_args(
                tmp_path / name, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation
            ),
            data_collator=collator(),
            train_dataset=examples(24),
        )
        trainer.train()
        single = params_of(trainer.model)
        assert any(not torch.equal(single[k], tiny_model().state_dict()[k]) for k in single)  # it did train
        for key in single:
            torch.testing.assert_close(distributed[key], single[key], atol=1e-5, rtol=0, msg=f"{name}: {key}")


def test_ddp_all_reduces_gradients_once_per_update(ddp_run):
    # 3 updates of 2 micro-batches: the first backward of each window runs under no_sync
    assert [json.loads((ddp_run / f"all_reduces_{r}.json").read_text()) for r in range(WORLD)] == [3, 3]


def test_sharded_evaluation_gathers_each_example_once_in_dataset_order(ddp_run, tmp_path):
    predictions = np.load(ddp_run / "ddp_predictions.npy")
    metrics = json.loads((ddp_run / "ddp_metrics.json").read_text())
    model = tiny_model()
    model.load_state_dict(torch.load(ddp_run / "ddp.pt"))
    single = Trainer(
        model=model,
        args=make_args(tmp_path),
        data_collator=collator(),
        compute_metrics=label_position_metrics,
        preprocess_logits_for_metrics=argmax_logits,
    ).predict(examples(5, seed=9))
    assert predictions.shape == single.predictions.shape and predictions.shape[0] == 5
    assert metrics["test_rows"] == 5
    at_labels = single.label_ids >= 0
    np.testing.assert_array_equal(predictions[at_labels], single.predictions[at_labels])
    for key in ("test_rows", "test_checksum", "test_label_checksum"):
        assert metrics[key] == single.metrics[key], key
    assert metrics["test_loss"] == pytest.approx(single.metrics["test_loss"], rel=1e-5)


def test_resumed_distributed_run_continues_each_ranks_data_order(ddp_run):
    runs = [json.loads((ddp_run / f"resume_{rank}.json").read_text()) for rank in range(WORLD)]
    for rank, run in enumerate(runs):
        assert len(run["straight"]) == 4 * 2  # 4 updates x batch 2, crossing an epoch (6 examples per rank)
        assert run["resumed"] == run["straight"][4:], f"rank {rank} resumed with another data order"
        assert run["same_params"], f"rank {rank}: resumed parameters differ from the uninterrupted run"
    first_epoch = [set(run["straight"][:6]) for run in runs]
    assert (
        not first_epoch[0] & first_epoch[1] and len(first_epoch[0] | first_epoch[1]) == 12
    )  # disjoint shards
    checkpoint = ddp_run / "straight" / "checkpoint-2"
    states = [torch.load(checkpoint / f"rng_state_{rank}.pt", weights_only=True) for rank in range(WORLD)]
    assert not (checkpoint / "rng_state.pt").exists()
    # dropout over batches of other shapes drew different amounts: one shared state could not resume both
    assert not torch.equal(states[0]["cpu"], states[1]["cpu"])


# ------------------------------------------------------------------------------------------- FSDP
def _fsdp_trainer(directory: Path, **overrides) -> Seq2SeqTrainer:
    args = make_args(
        directory,
        fsdp="full_shard",
        gradient_accumulation_steps=2,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        optim="adamw_torch",  # its state is sharded: the checkpoint must gather and re-shard it
        learning_rate=1e-2,
        predict_with_generate=True,
        generation_max_length=10,
        eval_strategy="steps",  # evaluation between updates: full parameters, then back to shards
        eval_steps=2,
        **overrides,
    )
    return Seq2SeqTrainer(
        model=tiny_model(),
        args=args,
        data_collator=collator(),
        train_dataset=examples(16, seed=5),
        eval_dataset=examples(5, seed=9),
        compute_metrics=order_sensitive_metrics,
        compute_generate_loss=True,
    )


def _fsdp_scenario(rank: int, out: Path) -> None:
    straight = _fsdp_trainer(out / "straight")
    straight.train()
    assert type(straight.model_wrapped).__name__ == "FullyShardedDataParallel"
    wrapped_layers = [
        m for m in straight.model_wrapped.modules() if type(m).__name__ == "FullyShardedDataParallel"
    ]
    assert len(wrapped_layers) == 3  # the root + one unit per encoder/decoder layer (default auto wrap)
    # 5 examples on 2 ranks with batch 2: rank 0 generates for 2 batches, rank 1 for 1, of other lengths
    metrics = straight.evaluate(examples(5, seed=9))
    prediction = straight.predict(examples(5, seed=9))
    straight.save_model(out / "straight_final")
    resumed = _fsdp_trainer(out / "resumed")
    resumed.train(resume_from_checkpoint=out / "straight" / "checkpoint-2")
    resumed.save_model(out / "resumed_final")
    if rank == 0:
        np.save(out / "predictions.npy", prediction.predictions)
        _write(out / "metrics.json", {"evaluate": metrics, "predict": prediction.metrics})


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    run_world(_fsdp_scenario, out)
    return out


def test_fsdp_checkpoint_is_a_normal_checkpoint_and_resume_equals_uninterrupted(fsdp_run):
    checkpoint = fsdp_run / "straight" / "checkpoint-2"
    for name in ("model.safetensors", "config.json", "optimizer.pt", "rng_state_0.pt", "rng_state_1.pt"):
        assert (checkpoint / name).is_file(), name
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    full = TransformerForConditionalGeneration.from_pretrained(checkpoint)  # the full, unsharded model
    assert set(optimizer["state"]) == {k for k, p in full.named_parameters()}  # keyed by name, unsharded
    assert all(optimizer["state"][k]["exp_avg"].shape == p.shape for k, p in full.named_parameters())
    straight = TransformerForConditionalGeneration.from_pretrained(fsdp_run / "straight_final")
    resumed = TransformerForConditionalGeneration.from_pretrained(fsdp_run / "resumed_final")
    initial = tiny_model().state_dict()
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)
    assert any(not torch.equal(v, initial[k]) for k, v in straight.state_dict().items())


def test_fsdp_generation_eval_returns_each_example_once_with_one_process_metrics(fsdp_run, tmp_path):
    predictions = np.load(fsdp_run / "predictions.npy")
    metrics = json.loads((fsdp_run / "metrics.json").read_text())
    model = TransformerForConditionalGeneration.from_pretrained(fsdp_run / "straight_final")
    single = Seq2SeqTrainer(
        model=model,
        args=make_args(tmp_path, predict_with_generate=True, generation_max_length=10),
        data_collator=collator(),
        compute_metrics=order_sensitive_metrics,
        compute_generate_loss=True,
    )
    expected = single.predict(examples(5, seed=9))
    assert predictions.shape[0] == 5
    np.testing.assert_array_equal(predictions, expected.predictions)
    for prefix, got in (("eval", metrics["evaluate"]), ("test", metrics["predict"])):
        assert got[f"{prefix}_rows"] == 5
        for key in ("checksum", "label_checksum", "gen_len"):
            assert got[f"{prefix}_{key}"] == pytest.approx(expected.metrics[f"test_{key}"], rel=1e-6), key
        assert got[f"{prefix}_loss"] == pytest.approx(expected.metrics["test_loss"], rel=1e-5)
