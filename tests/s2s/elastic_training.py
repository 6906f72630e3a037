"""A small training job for torchrun, used by ``test_elastic``: 2 processes (gloo) train a tiny Transformer
with dropout (so each process's RNG state must survive a resume too), a checkpoint every ``save_steps``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 --max-restarts 1 \\
        -m tests.s2s.elastic_training OUTPUT_DIR FINAL_WEIGHTS [--kill-rank R --kill-after-step S]

With ``--kill-rank``, on the first attempt only (TORCHELASTIC_RESTART_COUNT=0), process R kills itself with
SIGKILL right after update S, as a machine that vanishes would: no exception, no clean-up, no checkpoint.
torchrun then restarts both processes and ``Trainer.train()``, given no checkpoint, continues from the newest
complete one. With ``--raise-rank``, process R raises an exception after update S on every attempt, so the job
fails once its restarts are spent. Process 0 writes the final weights (safetensors) to FINAL_WEIGHTS and a
line per attempt to stdout. The script runs as the recipes do (``recipes.cli.run_command``), which records a
failing worker's error for torchrun.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal

import torch
from safetensors.torch import save_file

from recipes.cli import run_command
from s2s.callbacks import TrainerCallback
from s2s.data_collator import DataCollatorForSeq2Seq
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.seq2seq_trainer import Seq2SeqTrainer
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments
from tests.s2s.test_distributed import TOKENIZER, examples

MAX_STEPS = 8
SAVE_STEPS = 2


class KillAfterStep(TrainerCallback):
    """SIGKILL this process at the end of update ``step``, leaving ``OUTPUT_DIR.sigkill`` behind first.

    The marker is the test's proof of how the worker died: torchrun's own report may name the other process
    instead (-15, as the agent stops it), when that one notices the lost connection first.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            marker = f"{args.output_dir.rstrip('/')}.sigkill"
            with open(marker, "w") as f:
                f.write(f"rank {args.process_index} after update {self.step}\n")
            os.kill(os.getpid(), signal.SIGKILL)


class RaiseAfterStep(KillAfterStep):
    """Raise at the end of update ``step``: a bug, or a fault the process notices."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"rank {args.process_index} failed on purpose after update {self.step}")


def build_trainer(output_dir: str, callbacks: list[TrainerCallback]) -> Seq2SeqTrainer:
    torch.manual_seed(0)
    config = TransformerConfig.preset(
        "tiny", vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2, ffn_dim=32,
        dropout=0.1,
    )  # fmt: skip
    args = Seq2SeqTrainingArguments(
        output_dir=output_dir, report_to="none", disable_tqdm=True, per_device_train_batch_size=2,
        learning_rate=1e-2, max_steps=MAX_STEPS, save_strategy="steps", save_steps=SAVE_STEPS,
        logging_steps=1000, use_cpu=True, seed=0, ddp_backend="gloo",
    )  # fmt: skip
    return Seq2SeqTrainer(
        model=TransformerForConditionalGeneration(config),
        args=args,
        train_dataset=examples(12, seed=1),  # 12 rows, 2 processes x batch 2: an epoch is 3 updates
        data_collator=DataCollatorForSeq2Seq(TOKENIZER, decoder_start_token_id=2),
        callbacks=callbacks,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("final_weights")
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-after-step", type=int, default=None)
    parser.add_argument("--raise-rank", type=int, default=None)
    parser.add_argument("--raise-after-step", type=int, default=None)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[rank %(rank)s] %(message)s")
    rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    old_factory = logging.getLogRecordFactory()

    def with_rank(*args, **kwargs):
        log_record = old_factory(*args, **kwargs)
        log_record.rank = rank
        return log_record

    logging.setLogRecordFactory(with_rank)
    torch.set_num_threads(1)
    random.seed(0)
    callbacks = []
    if attempt == 0 and options.kill_rank == rank:
        callbacks.append(KillAfterStep(options.kill_after_step))
    if options.raise_rank == rank:
        callbacks.append(RaiseAfterStep(options.raise_after_step))
    trainer = build_trainer(options.output_dir, callbacks)
    result = trainer.train()
    if rank == 0:
        model = trainer.strategy.unwrap(trainer.model)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, options.final_weights)
        print(f"attempt {attempt} finished at step {result.global_step}", flush=True)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
