"""Which device and process this is, and what it logs and saves: the process properties of `TrainingArguments`.

They follow Hugging Face's names and meanings, so that scripts written for its `TrainingArguments`
(`args.device`, `args.world_size`, `args.parallel_mode`, `args.should_log`, `args.get_process_log_level()`,
`args.main_process_first()`, ...) run unchanged. Under torchrun they read the process group when it exists,
else the RANK / WORLD_SIZE / LOCAL_RANK variables torchrun sets; without either, this is the only process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from s2s.arguments.checks import cuda_available
from s2s.arguments.choices import LOG_LEVELS, PASSIVE, ParallelMode

logger = logging.getLogger(__name__)


class ProcessRoles:
    """Mixin of `TrainingArguments`; reads its fields use_cpu, use_mps_device, local_rank, log_on_each_node,
    save_on_each_node, log_level and log_level_replica."""

    use_cpu: bool
    use_mps_device: bool
    local_rank: int
    log_on_each_node: bool
    save_on_each_node: bool
    log_level: str
    log_level_replica: str

    @property
    def device(self) -> torch.device:
        """The device this process trains on: CPU with `use_cpu`, MPS with `use_mps_device`, else
        cuda:<local rank> when CUDA is available, else CPU."""
        if self.use_cpu:
            return torch.device("cpu")
        if self.use_mps_device:
            return torch.device("mps")
        if cuda_available():
            return torch.device("cuda", max(self.local_process_index, 0) % torch.cuda.device_count())
        return torch.device("cpu")

    @property
    def n_gpu(self) -> int:
        """GPUs used by this process: 1 on CUDA, else 0. (No `DataParallel`: several GPUs means one
        process per GPU through torchrun.)"""
        return 1 if self.device.type == "cuda" else 0

    @property
    def world_size(self) -> int:
        """Number of processes (torch.distributed when initialised, else torchrun's WORLD_SIZE, else 1)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return int(os.environ.get("WORLD_SIZE", 1))

    @property
    def process_index(self) -> int:
        """Global rank of this process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return int(os.environ.get("RANK", 0))

    @property
    def local_process_index(self) -> int:
        """Rank of this process on its node."""
        return self.local_rank if self.local_rank != -1 else int(os.environ.get("LOCAL_RANK", 0))

    @property
    def parallel_mode(self) -> ParallelMode:
        """`ParallelMode.DISTRIBUTED` when this process is one of several (torchrun with more than one
        process: each trains on its own device and the gradients are averaged over them), else
        `ParallelMode.NOT_PARALLEL`. Unlike Hugging Face, torchrun with a single process counts as not
        parallel, because the Trainer then runs without a process group, exactly as without torchrun."""
        return ParallelMode.DISTRIBUTED if self.world_size > 1 else ParallelMode.NOT_PARALLEL

    @property
    def should_log(self) -> bool:
        """Whether this process writes logs (see `log_on_each_node`)."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints (see `save_on_each_node`)."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    def get_process_log_level(self) -> int:
        """The logging level for this process: `log_level` on the process that logs (see `should_log`),
        `log_level_replica` on the others.

        "passive" leaves the choice to the application: the level it set on the s2s logger, or on the root
        logger when that is not Python's default WARNING. When it set neither, INFO on the process that logs
        and WARNING on the others. This is what Hugging Face's example scripts get (they raise the library's
        verbosity to INFO on the logging process before asking), so a script that does
        `logger.setLevel(args.get_process_log_level())` shows its own `logger.info` lines once, from the
        main process."""
        level = LOG_LEVELS[self.log_level if self.should_log else self.log_level_replica]
        if level != PASSIVE:
            return level
        chosen = _level_set_by_the_application()
        if chosen is not None:
            return chosen
        return logging.INFO if self.should_log else logging.WARNING

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process first (e.g. dataset preprocessing that writes a cache), while
        the other processes wait at a barrier; then they run it (reading the cache). `local=True` means the
        main process of each node. A no-op without an initialised process group."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            yield
            return
        is_main = (self.local_process_index if local else self.process_index) == 0
        try:
            if not is_main:
                logger.debug("process %d waiting for the main process to finish %s", self.process_index, desc)
                dist.barrier()
            yield
        finally:
            if is_main:
                logger.debug("main process finished %s; releasing the others", desc)
                dist.barrier()


def _level_set_by_the_application() -> int | None:
    """The level set on the s2s logger, else on the root logger when it is not Python's default; None when
    neither was set. (A root level explicitly set to WARNING cannot be told from the default.)"""
    s2s_logger = logging.getLogger("s2s")
    if s2s_logger.level != logging.NOTSET:
        return s2s_logger.level
    root_level = logging.getLogger().level
    return root_level if root_level != logging.WARNING else None
