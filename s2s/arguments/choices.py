"""The enums and fixed sets of strings that `TrainingArguments` accepts, with Hugging Face's names and values."""

from __future__ import annotations

import logging
from enum import Enum


class ExplicitEnum(str, Enum):
    """A string enum that compares equal to its value and fails with the list of valid choices."""

    @classmethod
    def _missing_(cls, value: object) -> ExplicitEnum:
        raise ValueError(f"{value!r} is not a valid {cls.__name__}; choose one of {cls.choices()}")

    @classmethod
    def choices(cls) -> list[str]:
        return [member.value for member in cls]

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class IntervalStrategy(ExplicitEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SchedulerType(ExplicitEnum):
    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    INVERSE_SQRT = "inverse_sqrt"
    REDUCE_ON_PLATEAU = "reduce_lr_on_plateau"


class OptimizerNames(ExplicitEnum):
    ADAMW_TORCH = "adamw_torch"
    ADAMW_TORCH_FUSED = "adamw_torch_fused"
    ADAMW_HF = "adamw_hf"
    ADAFACTOR = "adafactor"
    SGD = "sgd"
    ADAGRAD = "adagrad"
    RMSPROP = "rmsprop"


class ParallelMode(ExplicitEnum):
    """How the work is spread over devices, as `TrainingArguments.parallel_mode` reports it.

    The members and values are Hugging Face's, so scripts written for it run unchanged (they test
    `args.parallel_mode.value == "distributed"`). Being a string enum, a member also equals its value.
    This toolkit only ever reports NOT_PARALLEL (one process, one device or the CPU) or DISTRIBUTED (one
    process per device, gradients averaged over them). NOT_DISTRIBUTED (several GPUs driven by one process
    through `torch.nn.DataParallel`), the two SageMaker modes and TPU name set-ups it does not run; they
    exist so that code comparing against them still runs, and finds them never equal."""

    NOT_PARALLEL = "not_parallel"
    NOT_DISTRIBUTED = "not_distributed"
    DISTRIBUTED = "distributed"
    SAGEMAKER_MODEL_PARALLEL = "sagemaker_model_parallel"
    SAGEMAKER_DATA_PARALLEL = "sagemaker_data_parallel"
    TPU = "tpu"


# "passive" is not a level: it means "leave the level alone" (see TrainingArguments.get_process_log_level).
PASSIVE = -1
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "passive": PASSIVE,
}
HALF_PRECISION_BACKENDS = ("auto", "cuda_amp", "cpu_amp")
FSDP_OPTIONS = ("full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "offload", "auto_wrap")
DEBUG_OPTIONS = ("underflow_overflow",)
DDP_BACKENDS = ("nccl", "gloo", "mpi")
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
REPORTERS = ("jsonl", "tensorboard", "mlflow", "wandb")
OPTIONAL_REPORTERS = ("tensorboard", "mlflow", "wandb")
"""Reporters that need a package of their own (the extra of the same name installs it); "all" means jsonl
plus those of them that are installed."""
