"""`main_process_first` with a real process group (2 CPU processes, gloo)."""

import time
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from s2s.training_args import TrainingArguments


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        args = TrainingArguments(output_dir=out_dir, use_cpu=True, local_rank=rank, report_to="none")
        assert (args.world_size, args.process_index, args.should_save) == (world_size, rank, rank == 0)
        assert args.parallel_mode.value == "distributed"
        cache = Path(out_dir) / "cache.txt"
        with args.main_process_first(desc="building the cache"):
            if rank == 0:
                time.sleep(0.5)  # without the barrier, the replica would look before the file exists
                cache.write_text("built by rank 0")
            else:
                (Path(out_dir) / f"seen-{rank}.txt").write_text(
                    cache.read_text() if cache.exists() else "missing"
                )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_main_process_first_makes_replicas_wait(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "seen-1.txt").read_text() == "built by rank 0"
