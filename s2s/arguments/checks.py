"""Checks run when `TrainingArguments` is built: ranges, precision against the hardware, the schedules of
evaluation, saving and the learning rate, and batching. Each failure names the argument and the fix, so a bad
combination fails at construction, not after an hour of training. `fill_defaults` then derives the values
left unset (logging_dir, run_name, ...)."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from typing import Any

import torch

from s2s.arguments.choices import IntervalStrategy, SchedulerType
from s2s.precision import bf16_is_native

# minimum of each integer argument (None is always allowed: it means "not set")
_MINIMUMS = {
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "eval_accumulation_steps": 1,
    "max_tokens_per_batch": 1,
    "save_total_limit": 1,
    "dataloader_num_workers": 0,
    "dataloader_prefetch_factor": 1,
    "warmup_steps": 0,
    "max_consecutive_nonfinite_steps": 0,
    "ddp_timeout": 1,
    "ddp_bucket_cap_mb": 1,
    "fsdp_min_num_params": 0,
}
_NON_NEGATIVE = (
    "learning_rate",
    "weight_decay",
    "adam_epsilon",
    "max_grad_norm",
    "num_train_epochs",
    "eval_delay",
)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def check_ranges(args: Any) -> None:
    """Every numeric argument within its range."""
    for name, minimum in _MINIMUMS.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    for name in _NON_NEGATIVE:
        if getattr(args, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(args, name)}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(args, name)}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(
            f"max_steps must be a positive number of optimizer steps, or -1 to train for "
            f"num_train_epochs; got {args.max_steps}"
        )
    if args.max_steps == -1 and args.num_train_epochs == 0:
        raise ValueError("num_train_epochs must be > 0 when max_steps is -1 (nothing would be trained)")
    if not 0 <= args.warmup_ratio <= 1:
        raise ValueError(
            f"warmup_ratio must be in [0, 1] (a share of the training steps), got {args.warmup_ratio}"
        )
    if not 0 <= args.label_smoothing_factor < 1:
        raise ValueError(f"label_smoothing_factor must be in [0, 1), got {args.label_smoothing_factor}")
    if args.past_index < -1:
        raise ValueError(f"past_index must be -1 (off) or an output index >= 0, got {args.past_index}")


def check_dependent_options(args: Any) -> None:
    """Options that only mean something together with another one."""
    if args.dataloader_num_workers == 0:
        for name in ("dataloader_persistent_workers", "dataloader_prefetch_factor"):
            if getattr(args, name):
                raise ValueError(f"{name} needs dataloader_num_workers > 0 (it is 0)")
    if (args.fsdp_min_num_params or args.fsdp_transformer_layer_cls_to_wrap) and not args.fsdp:
        raise ValueError(
            "fsdp_min_num_params / fsdp_transformer_layer_cls_to_wrap only apply with fsdp; set "
            "fsdp='full_shard auto_wrap' or remove them"
        )
    if args.fsdp_min_num_params and args.fsdp_transformer_layer_cls_to_wrap:
        raise ValueError(
            "give fsdp_min_num_params or fsdp_transformer_layer_cls_to_wrap, not both: they are two "
            "auto-wrap policies"
        )
    if args.max_tokens_per_batch is not None and args.group_by_length:
        raise ValueError(
            "max_tokens_per_batch and group_by_length both choose how training batches are made; the token "
            "budget already groups examples by length, so remove group_by_length"
        )
    if args.use_mps_device and not mps_available():
        raise ValueError(
            "use_mps_device=True but the MPS device is not available on this machine; remove it (CUDA or CPU "
            "is picked automatically)"
        )


def check_precision(args: Any) -> None:
    """Mixed precision and TF32 against the device this process will train on. ``bf16="auto"`` becomes
    True where the device computes bf16 natively, else False; bf16=True where it does not is allowed (the
    numbers are right) but warned about, because it is many times slower than fp32 there."""
    cuda = cuda_available() and not args.use_cpu
    on_cpu = not cuda and not args.use_mps_device
    cpu_lacks_bf16 = on_cpu and not bf16_is_native(on_cuda=False)
    if args.bf16 not in (True, False, "auto"):
        raise ValueError(f"bf16={args.bf16!r} is not one of True, False, 'auto'")
    if args.bf16 == "auto":
        args.bf16 = not args.fp16 and not args.use_mps_device and bf16_is_native(on_cuda=cuda)
    elif args.bf16 is True and cpu_lacks_bf16:
        logging.getLogger("s2s").warning(
            "bf16=True, but this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): bf16 autocast trains "
            "here many times slower than fp32 (32x on one AVX2 machine). Use bf16='auto' to train in bf16 "
            "only where the hardware has it, or bf16=False"
        )
    if args.bf16_full_eval and cpu_lacks_bf16:
        logging.getLogger("s2s").warning(
            "bf16_full_eval=True, but this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): a model cast "
            "to bf16 evaluates here several times slower than in fp32 (5x for greedy generation, 7x for the "
            "loss, on one AVX2 machine); remove bf16_full_eval"
        )
    if args.fp16 and args.bf16:
        raise ValueError("fp16=True and bf16=True: choose one mixed-precision mode")
    if args.fp16_full_eval and args.bf16_full_eval:
        raise ValueError("fp16_full_eval=True and bf16_full_eval=True: choose one")
    for name in ("fp16", "fp16_full_eval"):
        if getattr(args, name) and not cuda:
            reason = "use_cpu=True is set" if args.use_cpu else "no CUDA device is available"
            raise ValueError(
                f"{name}=True needs a CUDA device ({reason}); on CPU use {name.replace('fp16', 'bf16')}=True"
            )
    if args.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(
            "bf16=True but this GPU has no bfloat16 support (needs Ampere or newer); use fp16=True"
        )
    # autocast always runs on the training device; a backend naming the other device is a contradiction
    if args.half_precision_backend == "cuda_amp" and not cuda:
        raise ValueError("half_precision_backend='cuda_amp' needs a CUDA device; use 'auto' (or 'cpu_amp')")
    if args.half_precision_backend == "cpu_amp" and cuda:
        raise ValueError(
            "half_precision_backend='cpu_amp' while training on CUDA; set use_cpu=True to train on the CPU, "
            "or use 'auto'"
        )
    if args.tf32:
        if not cuda:
            raise ValueError("tf32=True needs an Ampere or newer CUDA device; remove it on CPU")
        if torch.cuda.get_device_capability()[0] < 8:
            raise ValueError("tf32=True needs an Ampere or newer GPU (compute capability >= 8)")
    if args.tf32 is not None and cuda:
        # a process-wide switch, set here as Hugging Face does, so evaluation-only scripts get it too
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32


def check_intervals(args: Any) -> None:
    """The evaluation, logging and saving schedules; an evaluation strategy implies do_eval."""
    if args.eval_strategy is not IntervalStrategy.NO:
        args.do_eval = True
    if args.eval_strategy is IntervalStrategy.STEPS and not args.eval_steps:
        if args.logging_steps <= 0:
            raise ValueError("eval_strategy='steps' needs eval_steps (or logging_steps, its default) > 0")
        args.eval_steps = args.logging_steps
    if args.eval_steps is not None and args.eval_steps <= 0:
        raise ValueError(f"eval_steps must be > 0, got {args.eval_steps}")
    if args.logging_strategy is IntervalStrategy.STEPS and args.logging_steps <= 0:
        raise ValueError(f"logging_strategy='steps' needs logging_steps > 0, got {args.logging_steps}")
    if args.save_strategy is IntervalStrategy.STEPS and args.save_steps <= 0:
        raise ValueError(f"save_strategy='steps' needs save_steps > 0, got {args.save_steps}")


def check_lr_schedule(args: Any) -> None:
    """The learning-rate schedule against warmup and evaluation, and its keyword arguments."""
    if args.lr_scheduler_type is SchedulerType.CONSTANT and (args.warmup_steps or args.warmup_ratio):
        raise ValueError(
            "lr_scheduler_type='constant' has no warmup; use 'constant_with_warmup' or set warmup_steps=0 "
            "and warmup_ratio=0"
        )
    if args.lr_scheduler_type is SchedulerType.REDUCE_ON_PLATEAU:
        if args.eval_strategy is IntervalStrategy.NO:
            raise ValueError(
                "lr_scheduler_type='reduce_lr_on_plateau' steps on an evaluation metric; set "
                "eval_strategy='steps' or 'epoch'"
            )
        if args.warmup_steps or args.warmup_ratio:
            raise ValueError(
                "lr_scheduler_type='reduce_lr_on_plateau' has no warmup; set warmup_steps=0 and "
                "warmup_ratio=0, or use another lr_scheduler_type"
            )
        if args.metric_for_best_model is None:
            args.metric_for_best_model = "loss"
    from s2s.optimization import check_scheduler_kwargs

    check_scheduler_kwargs(args.lr_scheduler_type.value, args.lr_scheduler_kwargs)


def check_best_model(args: Any) -> None:
    """load_best_model_at_end needs an evaluation at every checkpoint; fill the metric and its direction."""
    if args.load_best_model_at_end:
        if args.eval_strategy is IntervalStrategy.NO:
            raise ValueError(
                "load_best_model_at_end=True needs evaluations to pick the best model; set "
                "eval_strategy='steps' or 'epoch' (and the same save_strategy)"
            )
        if args.save_strategy != args.eval_strategy:
            raise ValueError(
                "load_best_model_at_end=True needs save_strategy == eval_strategy, got "
                f"save_strategy={args.save_strategy.value!r} and eval_strategy={args.eval_strategy.value!r}"
            )
        if args.eval_strategy is IntervalStrategy.STEPS and args.save_steps % args.eval_steps != 0:
            raise ValueError(
                "load_best_model_at_end=True needs save_steps to be a multiple of eval_steps (each "
                f"checkpoint must have an evaluation), got save_steps={args.save_steps} and "
                f"eval_steps={args.eval_steps}"
            )
        if args.metric_for_best_model is None:
            args.metric_for_best_model = "loss"
    if args.metric_for_best_model is not None and args.greater_is_better is None:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")


def fill_defaults(args: Any) -> None:
    """Values derived from others when left unset."""
    if args.local_rank == -1 and "LOCAL_RANK" in os.environ:
        args.local_rank = int(os.environ["LOCAL_RANK"])
    if args.logging_dir is None:
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        args.logging_dir = os.path.join(args.output_dir, "runs", f"{stamp}_{socket.gethostname()}")
    if args.run_name is None:
        args.run_name = args.output_dir
    if args.disable_tqdm is None:
        args.disable_tqdm = logging.getLogger("s2s").getEffectiveLevel() > logging.WARNING
    if args.label_names is None:
        args.label_names = ["labels"]
