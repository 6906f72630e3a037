"""TrainingArguments: every knob of the Trainer, with the Hugging Face names, checked when it is built.

Each field is documented by the string right under it (the argument parser turns those into `--help`).
Arguments whose backend cannot exist here (apex, IPEX, XPU, TPU, FairScale, the Hub, ...) are refused at
construction with a message that names the field and what to use instead: no flag silently does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)


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


class HubStrategy(ExplicitEnum):
    END = "end"
    EVERY_SAVE = "every_save"
    CHECKPOINT = "checkpoint"
    ALL_CHECKPOINTS = "all_checkpoints"


LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "passive": -1,
}
HALF_PRECISION_BACKENDS = ("auto", "cuda_amp", "cpu_amp")
FSDP_OPTIONS = ("full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "offload", "auto_wrap")
DEBUG_OPTIONS = ("underflow_overflow",)
DDP_BACKENDS = ("nccl", "gloo", "mpi")
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
REPORTERS = ("jsonl", "tensorboard")
# Optimizer names Hugging Face knows whose backend cannot exist here, with what to use instead.
REFUSED_OPTIMIZERS = {
    "adamw_apex_fused": "NVIDIA apex is not supported; use optim='adamw_torch_fused' (fused AdamW in torch)",
    "adamw_anyprecision": "AnyPrecisionAdamW (torchdistx) is not supported; use optim='adamw_torch' with bf16=True",
}
_REDACTED = "<REDACTED>"


class _AliasValue(str):
    """The value of `evaluation_strategy`: equal to `eval_strategy`'s value (as a string and to the enum), but
    recognisable when it comes back into the constructor as a copy rather than as a user's choice."""

    __slots__ = ()


def _is_importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def _as_list(value: Any, *, name: str) -> list[str]:
    """Accept a list, a whitespace/comma separated string, or None/False/'' (empty)."""
    if value is None or value is False or value == "":
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list | tuple):
        return [str(v.value if isinstance(v, Enum) else v) for v in value]
    raise TypeError(f"{name} must be a string or a list of strings, got {type(value).__name__}")


def _as_json_dict(value: Any, *, name: str, allow_path: bool = False) -> dict[str, Any] | str | None:
    """A dict, a JSON object string, or (when allowed) a path to a JSON file left as a string."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{name} is not valid JSON ({err}): {value!r}") from None
            if not isinstance(parsed, dict):
                raise ValueError(f"{name} must be a JSON object, got {value!r}")
            return parsed
        if allow_path:
            return value
    raise ValueError(f"{name} must be a dict or a JSON object string like '{{\"key\": 1}}', got {value!r}")


@dataclass
class TrainingArguments:
    """Arguments of `s2s.Trainer`; names and defaults follow Hugging Face's `TrainingArguments`.

    Construct it directly, or from the command line / JSON / YAML with `s2s.ArgumentParser`.
    """

    # ---------------------------------------------------------------- what to run, where
    output_dir: str = "trainer_output"
    """Where checkpoints (`checkpoint-<step>/`), metrics, logs and the final model are written."""

    overwrite_output_dir: bool = False
    """Allow training into an `output_dir` that already holds checkpoints (otherwise the trainer refuses,
    so a finished run is not clobbered by accident; use `resume_from_checkpoint` to continue one)."""

    do_train: bool = False
    """Run training. Read by scripts (recipes), not by the Trainer itself."""

    do_eval: bool = False
    """Run evaluation on the validation set. Set automatically when `eval_strategy` is not "no"."""

    do_predict: bool = False
    """Run prediction on the test set. Read by scripts (recipes), not by the Trainer itself."""

    resume_from_checkpoint: str | None = None
    """Checkpoint folder to resume from (or "true"/"last" in scripts for the newest complete one). Read by
    scripts, which pass it to `Trainer.train(resume_from_checkpoint=...)`."""

    # ---------------------------------------------------------------- evaluation schedule
    eval_strategy: IntervalStrategy | str = "no"
    """When to evaluate during training: "no", "steps" (every `eval_steps`) or "epoch". Newer Hugging Face
    name of `evaluation_strategy`; the two always hold the same value."""

    evaluation_strategy: IntervalStrategy | str | None = None
    """Older name of `eval_strategy` (the seed's name). Giving either sets both; reading it gives the value of
    `eval_strategy` as a string."""

    eval_steps: int | None = None
    """Update steps between two evaluations when `eval_strategy="steps"`; defaults to `logging_steps`."""

    eval_delay: float = 0
    """Epochs or steps (following `eval_strategy`) to wait before the first evaluation."""

    eval_accumulation_steps: int | None = None
    """Prediction steps after which gathered predictions are moved to the CPU. None keeps everything on the
    device until the end (faster, more memory)."""

    prediction_loss_only: bool = False
    """Evaluate and predict only the loss (no predictions or labels kept, no `compute_metrics`)."""

    include_inputs_for_metrics: bool = False
    """Pass the model inputs to `compute_metrics` as `EvalPrediction.inputs` (e.g. sources for COMET-like
    metrics or for writing predictions)."""

    # ---------------------------------------------------------------- batches
    per_device_train_batch_size: int = 8
    """Examples per micro-batch on each device for training (ignored when `max_tokens_per_batch` is set)."""

    per_device_eval_batch_size: int = 8
    """Examples per batch on each device for evaluation and prediction."""

    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step. The loss is normalised by the target tokens of all of them, so
    4 x 8 trains exactly like 1 x 32."""

    max_tokens_per_batch: int | None = None
    """s2s addition: token-budget batching for training (`samplers.TokenBudgetBatchSampler`): each
    micro-batch holds at most this many padded tokens, counting source and target; replaces
    `per_device_train_batch_size` and `group_by_length`."""

    auto_find_batch_size: bool = False
    """On an out-of-memory error, halve the training batch size and restart the epoch loop."""

    group_by_length: bool = False
    """Group training examples of similar length into batches (`samplers.LengthGroupedSampler`), so less
    padding is computed."""

    length_column_name: str = "length"
    """Column of precomputed lengths used by `group_by_length` when the dataset has it."""

    dataloader_drop_last: bool = False
    """Drop the last incomplete training batch."""

    dataloader_num_workers: int = 0
    """Worker processes for data loading; 0 loads in the main process."""

    dataloader_pin_memory: bool = True
    """Pin host memory in data loaders (faster copies to CUDA; no effect on CPU)."""

    dataloader_persistent_workers: bool = False
    """Keep data loader workers alive between epochs (needs `dataloader_num_workers > 0`)."""

    dataloader_prefetch_factor: int | None = None
    """Batches each worker loads in advance (needs `dataloader_num_workers > 0`)."""

    remove_unused_columns: bool = True
    """Drop `datasets.Dataset` columns that the model's `forward` does not take."""

    label_names: list[str] | None = None
    """Keys of the batch that hold labels; defaults to ["labels"]."""

    past_index: int = -1
    """Index of a model output holding past hidden states fed back as `mems` (TransformerXL/XLNet style);
    -1 disables it."""

    # ---------------------------------------------------------------- optimisation
    learning_rate: float = 5e-5
    """Peak learning rate (reached after warmup)."""

    weight_decay: float = 0.0
    """Decoupled weight decay applied to all parameters except biases and normalisation weights."""

    adam_beta1: float = 0.9
    """beta1 of Adam(W)."""

    adam_beta2: float = 0.999
    """beta2 of Adam(W)."""

    adam_epsilon: float = 1e-8
    """epsilon of Adam(W)."""

    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping (the norm is still logged)."""

    optim: OptimizerNames | str = "adamw_torch_fused"
    """Optimizer: adamw_torch_fused (the default: one fused kernel; on CPU ~2.5x faster than adamw_torch's
    per-parameter loop, ~4% of a small model's step), adamw_torch, adamw_hf (same as adamw_torch), adafactor,
    sgd, adagrad or rmsprop."""

    optim_args: str | None = None
    """Extra optimizer arguments as "key=value,key=value", e.g. "momentum=0.9,nesterov=True" for sgd."""

    adafactor: bool = False
    """Deprecated: same as `optim="adafactor"`."""

    num_train_epochs: float = 3.0
    """Epochs to train; a fraction trains that share of the last epoch."""

    max_steps: int = -1
    """When positive, the total number of optimizer steps; overrides `num_train_epochs`."""

    lr_scheduler_type: SchedulerType | str = "linear"
    """Learning-rate schedule: linear, cosine, cosine_with_restarts, polynomial, constant,
    constant_with_warmup, inverse_sqrt or reduce_lr_on_plateau."""

    lr_scheduler_kwargs: dict[str, Any] | str = field(default_factory=dict)
    """Extra scheduler arguments as a dict or JSON string, e.g. {"num_cycles": 2} for cosine_with_restarts,
    {"power": 2.0, "lr_end": 1e-7} for polynomial, {"timescale": 4000} for inverse_sqrt."""

    warmup_ratio: float = 0.0
    """Share of the total training steps used for a linear warmup from 0 to `learning_rate`."""

    warmup_steps: int = 0
    """Steps of linear warmup; overrides `warmup_ratio` when positive."""

    label_smoothing_factor: float = 0.0
    """Label smoothing epsilon in [0, 1); padding labels (-100) are ignored."""

    max_consecutive_nonfinite_steps: int = 10
    """s2s addition: a step whose loss or gradient is NaN/inf is skipped and counted; training stops with an
    error after this many such steps in a row. 0 disables the stop (steps are still skipped)."""

    # ---------------------------------------------------------------- logging
    log_level: Literal["debug", "info", "warning", "error", "critical", "passive"] = "passive"
    """Log level of the main process: debug, info, warning, error, critical, or passive (leave the level the
    application set)."""

    log_level_replica: Literal["debug", "info", "warning", "error", "critical", "passive"] = "warning"
    """Log level of the other processes (same choices as `log_level`)."""

    log_on_each_node: bool = True
    """In multi-node training, log from the main process of every node, not only of node 0."""

    logging_dir: str | None = None
    """Folder for TensorBoard logs; defaults to output_dir/runs/<date>_<host>."""

    logging_strategy: IntervalStrategy | str = "steps"
    """When to log training loss and learning rate: "no", "steps" or "epoch"."""

    logging_first_step: bool = False
    """Also log after the first optimizer step."""

    logging_steps: int = 500
    """Update steps between two logs when `logging_strategy="steps"`."""

    logging_nan_inf_filter: bool = True
    """Leave NaN/inf losses out of the logged mean training loss (they are counted separately)."""

    report_to: list[str] | str = field(default_factory=lambda: ["jsonl"])
    """Where logs go: "jsonl" (always available), "tensorboard" (when installed), "all" or "none"."""

    run_name: str | None = None
    """A name for the run in the logs; defaults to `output_dir`."""

    disable_tqdm: bool | None = None
    """Hide the progress bars; by default they show unless the s2s logger is quieter than WARNING."""

    skip_memory_metrics: bool = True
    """Skip peak-memory metrics; False reports them (costs a little time)."""

    save_predictions: bool = False
    """s2s addition: write predictions as JSONL next to the metrics after evaluation and prediction."""

    # ---------------------------------------------------------------- checkpoints and best model
    save_strategy: IntervalStrategy | str = "steps"
    """When to save a checkpoint: "no", "steps" (every `save_steps`) or "epoch"."""

    save_steps: int = 500
    """Update steps between two checkpoints when `save_strategy="steps"`."""

    save_total_limit: int | None = None
    """Keep at most this many checkpoints (oldest deleted first, never the best one); None keeps all."""

    save_on_each_node: bool = False
    """In multi-node training, save on every node (for nodes without a shared file system)."""

    load_best_model_at_end: bool = False
    """Reload the best checkpoint (by `metric_for_best_model`) when training ends. Needs
    `save_strategy == eval_strategy`, and `save_steps` a multiple of `eval_steps`."""

    metric_for_best_model: str | None = None
    """Metric that picks the best checkpoint ("loss", "bleu", ..., with or without the "eval_" prefix);
    defaults to "loss" with `load_best_model_at_end`."""

    greater_is_better: bool | None = None
    """Whether a larger `metric_for_best_model` is better; defaults to False for metrics ending in "loss",
    True otherwise."""

    ignore_data_skip: bool = False
    """On resume, start the data from the beginning of the epoch instead of continuing the exact order."""

    # ---------------------------------------------------------------- seeds and determinism
    seed: int = 42
    """Seed set at the start of training (model initialisation, dropout)."""

    data_seed: int | None = None
    """Seed of the data samplers; defaults to `seed`."""

    full_determinism: bool = False
    """Use deterministic torch algorithms (slower) in addition to seeding."""

    # ---------------------------------------------------------------- device and precision
    use_cpu: bool = False
    """Train on the CPU even when CUDA is available."""

    no_cuda: bool = False
    """Deprecated name of `use_cpu`."""

    use_mps_device: bool = False
    """Use the Apple MPS device (only where MPS is available)."""

    bf16: bool = False
    """bfloat16 mixed precision (autocast) for training, on CPU or a bf16-capable GPU."""

    fp16: bool = False
    """float16 mixed precision with a gradient scaler; needs a CUDA device."""

    fp16_opt_level: str = "O1"
    """Apex AMP level; only meaningful with apex, which is not supported, so only "O1" is accepted."""

    half_precision_backend: Literal["auto", "cuda_amp", "cpu_amp"] = "auto"
    """Mixed-precision backend: "auto", "cuda_amp" or "cpu_amp". It is torch autocast on the training device
    either way; naming the other device's backend is refused (set `use_cpu` to choose the device)."""

    fp16_backend: str = "auto"
    """Deprecated name of `half_precision_backend`."""

    bf16_full_eval: bool = False
    """Evaluate with the model cast to bfloat16 (faster, less memory, slightly different metrics)."""

    fp16_full_eval: bool = False
    """Evaluate with the model cast to float16; needs a CUDA device."""

    tf32: bool | None = None
    """Allow TF32 matmuls on Ampere or newer GPUs (set process-wide at construction); None leaves torch's
    setting alone."""

    jit_mode_eval: bool = False
    """TorchScript tracing for inference: not supported (refused when True); use `torch_compile`."""

    use_ipex: bool = False
    """Intel Extension for PyTorch: not supported (refused when True)."""

    torch_compile: bool = False
    """Compile the model with `torch.compile`."""

    torch_compile_backend: str | None = None
    """Backend for `torch.compile` (e.g. "inductor"); setting it turns `torch_compile` on."""

    torch_compile_mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = None
    """Mode for `torch.compile`: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs; setting
    it turns `torch_compile` on."""

    torchdynamo: str | None = None
    """Deprecated (refused when set): use `torch_compile_backend`."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (models with
    `gradient_checkpointing_enable()`)."""

    debug: list[str] | str = ""
    """Debug features: "underflow_overflow" reports the first module whose activations turn inf/NaN."""

    # ---------------------------------------------------------------- distributed
    local_rank: int = -1
    """Rank of the process on its node; read from the LOCAL_RANK set by torchrun when left at -1."""

    ddp_backend: Literal["nccl", "gloo", "mpi"] | None = None
    """torch.distributed backend: "nccl", "gloo" or "mpi"; defaults to nccl on CUDA, gloo on CPU."""

    ddp_timeout: int = 1800
    """Seconds before a collective operation times out (`init_process_group(timeout=...)`)."""

    ddp_find_unused_parameters: bool | None = None
    """`find_unused_parameters` of DistributedDataParallel; None means False unless gradient checkpointing
    needs otherwise."""

    ddp_bucket_cap_mb: int | None = None
    """`bucket_cap_mb` of DistributedDataParallel; None keeps torch's default."""

    fsdp: list[str] | str = ""
    """Fully sharded data parallel options: full_shard, shard_grad_op, no_shard or hybrid_shard, plus
    optionally offload and auto_wrap (e.g. "full_shard auto_wrap")."""

    fsdp_min_num_params: int = 0
    """With FSDP auto wrap, wrap every module with at least this many parameters (0: wrap by layer class)."""

    fsdp_config: dict[str, Any] | str | None = None
    """Extra FSDP settings as a dict, a JSON string, or the path to a JSON file."""

    fsdp_transformer_layer_cls_to_wrap: str | None = None
    """With FSDP auto wrap, the class name of the transformer layer to wrap (e.g. "EncoderLayer")."""

    xpu_backend: str | None = None
    """Intel XPU distributed backend: not supported (refused when set); use `ddp_backend`."""

    tpu_num_cores: int | None = None
    """TPU cores: not supported (refused when set)."""

    sharded_ddp: str = ""
    """FairScale sharded DDP: not supported (refused when set); use `fsdp="shard_grad_op"`."""

    deepspeed: str | None = None
    """DeepSpeed config: not supported (refused when set); use `fsdp`."""

    # ---------------------------------------------------------------- hub and hyper-parameter search
    push_to_hub: bool = False
    """Push to the Hugging Face Hub: not supported, this toolkit works offline (refused when True)."""

    hub_model_id: str | None = None
    """Hub repository name; only meaningful with `push_to_hub` (refused when set)."""

    hub_strategy: HubStrategy | str = "every_save"
    """When to push to the Hub; only meaningful with `push_to_hub` (refused when changed)."""

    hub_token: str | None = None
    """Hub token; only meaningful with `push_to_hub` (refused when set; redacted in `to_dict`)."""

    hub_private_repo: bool = False
    """Make the Hub repository private; only meaningful with `push_to_hub` (refused when True)."""

    ray_scope: str = "last"
    """Ray Tune scope for hyper-parameter search; Ray is not supported (refused when changed)."""

    def __post_init__(self) -> None:
        self._resolve_deprecated_aliases()
        self._normalise_choices()
        self._refuse_unavailable_backends()
        self._check_ranges()
        self._check_precision()
        self._check_schedules()
        self._check_batching()
        self._fill_defaults()
        self._initialised = True

    # The two names of the evaluation strategy stay in step even when one is assigned after construction.
    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("eval_strategy", "evaluation_strategy") and self.__dict__.get("_initialised"):
            value = IntervalStrategy(value)
            object.__setattr__(self, "eval_strategy", value)
            object.__setattr__(self, "evaluation_strategy", _AliasValue(value.value))
            return
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------ construction steps
    def _resolve_deprecated_aliases(self) -> None:
        alias = self.evaluation_strategy
        # An _AliasValue is this class's own echo of eval_strategy, handed back by dataclasses.replace or
        # TrainingArguments(**args.to_dict()): it must not undo a change made through eval_strategy.
        if alias is not None and not isinstance(alias, _AliasValue):
            new, old = IntervalStrategy(self.eval_strategy), IntervalStrategy(alias)
            if new is not IntervalStrategy.NO and new is not old:
                raise ValueError(
                    f"eval_strategy={new.value!r} and evaluation_strategy={old.value!r} disagree: they are two "
                    "names of one argument, give only one (eval_strategy)"
                )
            self.eval_strategy = old
        self.eval_strategy = IntervalStrategy(self.eval_strategy)
        self.evaluation_strategy = _AliasValue(self.eval_strategy.value)

        if self.adafactor:
            warnings.warn("adafactor=True is deprecated; use optim='adafactor'", FutureWarning, stacklevel=3)
            self.optim = OptimizerNames.ADAFACTOR.value
            self.adafactor = False  # mapped; a later dataclasses.replace(args, optim=...) must not undo it
        if self.no_cuda:
            warnings.warn("no_cuda is deprecated; use use_cpu=True", FutureWarning, stacklevel=3)
            self.use_cpu = True
        if self.fp16_backend != "auto":
            warnings.warn(
                "fp16_backend is deprecated; use half_precision_backend", FutureWarning, stacklevel=3
            )
            if self.half_precision_backend not in ("auto", self.fp16_backend):
                raise ValueError(
                    f"fp16_backend={self.fp16_backend!r} and half_precision_backend="
                    f"{self.half_precision_backend!r} disagree; give only half_precision_backend"
                )
            self.half_precision_backend = self.fp16_backend
            self.fp16_backend = "auto"  # mapped, as for adafactor
        if self.torch_compile_backend is not None or self.torch_compile_mode is not None:
            self.torch_compile = True

    def _normalise_choices(self) -> None:
        self.logging_strategy = IntervalStrategy(self.logging_strategy)
        self.save_strategy = IntervalStrategy(self.save_strategy)
        self.lr_scheduler_type = SchedulerType(self.lr_scheduler_type)
        self.hub_strategy = HubStrategy(self.hub_strategy)
        optim = self.optim.value if isinstance(self.optim, Enum) else str(self.optim)
        if optim in REFUSED_OPTIMIZERS:
            raise ValueError(f"optim={optim!r}: {REFUSED_OPTIMIZERS[optim]}")
        self.optim = OptimizerNames(optim)
        _check_choice("log_level", self.log_level, LOG_LEVELS)
        _check_choice("log_level_replica", self.log_level_replica, LOG_LEVELS)
        if self.half_precision_backend == "apex":
            raise ValueError(
                "half_precision_backend='apex': NVIDIA apex is not supported; use 'auto' (torch autocast, "
                "with a gradient scaler for fp16)"
            )
        _check_choice("half_precision_backend", self.half_precision_backend, HALF_PRECISION_BACKENDS)
        if self.ddp_backend is not None:
            _check_choice("ddp_backend", self.ddp_backend, DDP_BACKENDS)
        if self.torch_compile_mode is not None:
            _check_choice("torch_compile_mode", self.torch_compile_mode, TORCH_COMPILE_MODES)

        self.fsdp = _as_list(self.fsdp, name="fsdp")
        for option in self.fsdp:
            _check_choice("fsdp", option, FSDP_OPTIONS)
        shard_modes = [o for o in self.fsdp if o not in ("offload", "auto_wrap")]
        if self.fsdp and len(shard_modes) != 1:
            raise ValueError(
                f"fsdp={self.fsdp} needs exactly one of full_shard, shard_grad_op, no_shard, hybrid_shard "
                "(plus optionally offload and auto_wrap)"
            )
        self.fsdp_config = _as_json_dict(self.fsdp_config, name="fsdp_config", allow_path=True)
        self.debug = _as_list(self.debug, name="debug")
        for option in self.debug:
            if option == "tpu_metrics_debug":
                raise ValueError(
                    "debug='tpu_metrics_debug': TPUs are not supported; use 'underflow_overflow'"
                )
            _check_choice("debug", option, DEBUG_OPTIONS)
        self.lr_scheduler_kwargs = _as_json_dict(self.lr_scheduler_kwargs, name="lr_scheduler_kwargs") or {}
        self.report_to = _normalise_report_to(self.report_to)
        if self.label_names is not None:
            self.label_names = _as_list(self.label_names, name="label_names")
        if self.optim_args:
            from s2s.optimization import check_optim_args

            check_optim_args(self.optim.value, self.optim_args)  # fail now on a typo, not at step 0

    def _refuse_unavailable_backends(self) -> None:
        refusals = [
            (
                self.use_ipex,
                "use_ipex=True: Intel Extension for PyTorch is not supported; bf16=True gives "
                "CPU mixed precision with plain torch",
            ),
            (
                self.xpu_backend is not None,
                f"xpu_backend={self.xpu_backend!r}: Intel XPU is not supported; "
                "use ddp_backend='gloo' (CPU) or 'nccl' (CUDA)",
            ),
            (self.tpu_num_cores is not None, "tpu_num_cores: TPUs are not supported; train on CPU or CUDA"),
            (
                bool(self.sharded_ddp),
                f"sharded_ddp={self.sharded_ddp!r}: FairScale is not supported; use "
                "fsdp='shard_grad_op' (or 'full_shard') from torch.distributed.fsdp",
            ),
            (
                self.deepspeed is not None,
                "deepspeed: DeepSpeed is not supported ("
                + (
                    "installed, but s2s has no DeepSpeed engine"
                    if _is_importable("deepspeed")
                    else "not installed"
                )
                + "); use fsdp='full_shard' for sharded training",
            ),
            (
                self.fp16_opt_level != "O1",
                f"fp16_opt_level={self.fp16_opt_level!r}: opt levels belong to "
                "NVIDIA apex, which is not supported; fp16=True uses torch autocast with a gradient scaler",
            ),
            (
                self.jit_mode_eval,
                "jit_mode_eval=True: TorchScript tracing is not supported; use torch_compile=True",
            ),
            (
                self.torchdynamo is not None,
                f"torchdynamo={self.torchdynamo!r} is deprecated; use "
                f"torch_compile_backend={self.torchdynamo!r}",
            ),
            (
                self.ray_scope != "last",
                f"ray_scope={self.ray_scope!r}: Ray hyper-parameter search is not "
                "supported; use Trainer.hyperparameter_search(backend='optuna')",
            ),
            (
                self.push_to_hub,
                "push_to_hub=True: pushing to the Hugging Face Hub is not supported (no network "
                "here); copy output_dir yourself or use huggingface_hub.upload_folder",
            ),
            (
                self.hub_model_id is not None,
                "hub_model_id is only meaningful with push_to_hub, which is not supported; remove it",
            ),
            (
                self.hub_token is not None,
                "hub_token is only meaningful with push_to_hub, which is not supported; remove it",
            ),
            (
                self.hub_private_repo,
                "hub_private_repo is only meaningful with push_to_hub, which is not supported; remove it",
            ),
            (
                self.hub_strategy is not HubStrategy.EVERY_SAVE,
                "hub_strategy is only meaningful with push_to_hub, which is not supported; remove it",
            ),
            (
                self.use_mps_device and not _mps_available(),
                "use_mps_device=True but the MPS device is not "
                "available on this machine; remove it (CUDA or CPU is picked automatically)",
            ),
        ]
        for refused, message in refusals:
            if refused:
                raise ValueError(message)

    def _check_ranges(self) -> None:
        _at_least("per_device_train_batch_size", self.per_device_train_batch_size, 1)
        _at_least("per_device_eval_batch_size", self.per_device_eval_batch_size, 1)
        _at_least("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        _at_least("eval_accumulation_steps", self.eval_accumulation_steps, 1)
        _at_least("max_tokens_per_batch", self.max_tokens_per_batch, 1)
        _at_least("save_total_limit", self.save_total_limit, 1)
        _at_least("dataloader_num_workers", self.dataloader_num_workers, 0)
        _at_least("dataloader_prefetch_factor", self.dataloader_prefetch_factor, 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        _at_least("max_consecutive_nonfinite_steps", self.max_consecutive_nonfinite_steps, 0)
        _at_least("ddp_timeout", self.ddp_timeout, 1)
        _at_least("ddp_bucket_cap_mb", self.ddp_bucket_cap_mb, 1)
        _at_least("fsdp_min_num_params", self.fsdp_min_num_params, 0)
        for name in (
            "learning_rate",
            "weight_decay",
            "adam_epsilon",
            "max_grad_norm",
            "num_train_epochs",
            "eval_delay",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be a positive number of optimizer steps, or -1 to train for "
                f"num_train_epochs; got {self.max_steps}"
            )
        if self.max_steps == -1 and self.num_train_epochs == 0:
            raise ValueError("num_train_epochs must be > 0 when max_steps is -1 (nothing would be trained)")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(
                f"warmup_ratio must be in [0, 1] (a share of the training steps), got {self.warmup_ratio}"
            )
        if not 0 <= self.label_smoothing_factor < 1:
            raise ValueError(f"label_smoothing_factor must be in [0, 1), got {self.label_smoothing_factor}")
        if self.past_index < -1:
            raise ValueError(f"past_index must be -1 (off) or an output index >= 0, got {self.past_index}")
        if self.dataloader_num_workers == 0:
            for name in ("dataloader_persistent_workers", "dataloader_prefetch_factor"):
                if getattr(self, name):
                    raise ValueError(f"{name} needs dataloader_num_workers > 0 (it is 0)")
        if (self.fsdp_min_num_params or self.fsdp_transformer_layer_cls_to_wrap) and not self.fsdp:
            raise ValueError(
                "fsdp_min_num_params / fsdp_transformer_layer_cls_to_wrap only apply with fsdp; set "
                "fsdp='full_shard auto_wrap' or remove them"
            )
        if self.fsdp_min_num_params and self.fsdp_transformer_layer_cls_to_wrap:
            raise ValueError(
                "give fsdp_min_num_params or fsdp_transformer_layer_cls_to_wrap, not both: they are two "
                "auto-wrap policies"
            )

    def _check_precision(self) -> None:
        if self.fp16 and self.bf16:
            raise ValueError("fp16=True and bf16=True: choose one mixed-precision mode")
        if self.fp16_full_eval and self.bf16_full_eval:
            raise ValueError("fp16_full_eval=True and bf16_full_eval=True: choose one")
        cuda = _cuda_available() and not self.use_cpu
        for name in ("fp16", "fp16_full_eval"):
            if getattr(self, name) and not cuda:
                reason = "use_cpu=True is set" if self.use_cpu else "no CUDA device is available"
                raise ValueError(
                    f"{name}=True needs a CUDA device ({reason}); on CPU use "
                    f"{name.replace('fp16', 'bf16')}=True"
                )
        if self.bf16 and cuda and not torch.cuda.is_bf16_supported():
            raise ValueError(
                "bf16=True but this GPU has no bfloat16 support (needs Ampere or newer); use fp16=True"
            )
        # autocast always runs on the training device; a backend naming the other device is a contradiction
        if self.half_precision_backend == "cuda_amp" and not cuda:
            raise ValueError(
                "half_precision_backend='cuda_amp' needs a CUDA device; use 'auto' (or 'cpu_amp')"
            )
        if self.half_precision_backend == "cpu_amp" and cuda:
            raise ValueError(
                "half_precision_backend='cpu_amp' while training on CUDA; set use_cpu=True to train on the CPU, "
                "or use 'auto'"
            )
        if self.tf32:
            if not cuda:
                raise ValueError("tf32=True needs an Ampere or newer CUDA device; remove it on CPU")
            if torch.cuda.get_device_capability()[0] < 8:
                raise ValueError("tf32=True needs an Ampere or newer GPU (compute capability >= 8)")
        if self.tf32 is not None and cuda:
            # a process-wide switch, set here as Hugging Face does, so evaluation-only scripts get it too
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32

    def _check_schedules(self) -> None:
        if self.eval_strategy is not IntervalStrategy.NO:
            self.do_eval = True
        if self.eval_strategy is IntervalStrategy.STEPS and not self.eval_steps:
            if self.logging_steps <= 0:
                raise ValueError("eval_strategy='steps' needs eval_steps (or logging_steps, its default) > 0")
            self.eval_steps = self.logging_steps
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise ValueError(f"eval_steps must be > 0, got {self.eval_steps}")
        if self.logging_strategy is IntervalStrategy.STEPS and self.logging_steps <= 0:
            raise ValueError(f"logging_strategy='steps' needs logging_steps > 0, got {self.logging_steps}")
        if self.save_strategy is IntervalStrategy.STEPS and self.save_steps <= 0:
            raise ValueError(f"save_strategy='steps' needs save_steps > 0, got {self.save_steps}")

        if self.lr_scheduler_type is SchedulerType.CONSTANT and (self.warmup_steps or self.warmup_ratio):
            raise ValueError(
                "lr_scheduler_type='constant' has no warmup; use 'constant_with_warmup' or set warmup_steps=0 "
                "and warmup_ratio=0"
            )
        if self.lr_scheduler_type is SchedulerType.REDUCE_ON_PLATEAU:
            if self.eval_strategy is IntervalStrategy.NO:
                raise ValueError(
                    "lr_scheduler_type='reduce_lr_on_plateau' steps on an evaluation metric; set "
                    "eval_strategy='steps' or 'epoch'"
                )
            if self.warmup_steps or self.warmup_ratio:
                raise ValueError(
                    "lr_scheduler_type='reduce_lr_on_plateau' has no warmup; set warmup_steps=0 and "
                    "warmup_ratio=0, or use another lr_scheduler_type"
                )
            if self.metric_for_best_model is None:
                self.metric_for_best_model = "loss"
        if self.load_best_model_at_end:
            if self.eval_strategy is IntervalStrategy.NO:
                raise ValueError(
                    "load_best_model_at_end=True needs evaluations to pick the best model; set "
                    "eval_strategy='steps' or 'epoch' (and the same save_strategy)"
                )
            if self.save_strategy != self.eval_strategy:
                raise ValueError(
                    "load_best_model_at_end=True needs save_strategy == eval_strategy, got "
                    f"save_strategy={self.save_strategy.value!r} and eval_strategy={self.eval_strategy.value!r}"
                )
            if self.eval_strategy is IntervalStrategy.STEPS and self.save_steps % self.eval_steps != 0:
                raise ValueError(
                    "load_best_model_at_end=True needs save_steps to be a multiple of eval_steps (each "
                    f"checkpoint must have an evaluation), got save_steps={self.save_steps} and "
                    f"eval_steps={self.eval_steps}"
                )
            if self.metric_for_best_model is None:
                self.metric_for_best_model = "loss"
        if self.metric_for_best_model is not None and self.greater_is_better is None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

        from s2s.optimization import check_scheduler_kwargs

        check_scheduler_kwargs(self.lr_scheduler_type.value, self.lr_scheduler_kwargs)

    def _check_batching(self) -> None:
        if self.max_tokens_per_batch is not None and self.group_by_length:
            raise ValueError(
                "max_tokens_per_batch and group_by_length both choose how training batches are made; the token "
                "budget already groups examples by length, so remove group_by_length"
            )

    def _fill_defaults(self) -> None:
        if self.local_rank == -1 and "LOCAL_RANK" in os.environ:
            self.local_rank = int(os.environ["LOCAL_RANK"])
        if self.logging_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            self.logging_dir = os.path.join(self.output_dir, "runs", f"{stamp}_{socket.gethostname()}")
        if self.run_name is None:
            self.run_name = self.output_dir
        if self.disable_tqdm is None:
            self.disable_tqdm = logging.getLogger("s2s").getEffectiveLevel() > logging.WARNING
        if self.label_names is None:
            self.label_names = ["labels"]

    # ------------------------------------------------------------ devices and processes
    @property
    def device(self) -> torch.device:
        """The device this process trains on: CPU with `use_cpu`, MPS with `use_mps_device`, else
        cuda:<local rank> when CUDA is available, else CPU."""
        if self.use_cpu:
            return torch.device("cpu")
        if self.use_mps_device:
            return torch.device("mps")
        if _cuda_available():
            return torch.device("cuda", max(self.local_process_index, 0) % torch.cuda.device_count())
        return torch.device("cpu")

    @property
    def n_gpu(self) -> int:
        """GPUs used by this process: 1 on CUDA, else 0. (No `DataParallel`: several GPUs means one
        process per GPU through torchrun.)"""
        return 1 if self.device.type == "cuda" else 0

    @property
    def train_batch_size(self) -> int:
        """Examples per training micro-batch in this process."""
        return self.per_device_train_batch_size * max(1, self.n_gpu)

    @property
    def eval_batch_size(self) -> int:
        """Examples per evaluation batch in this process."""
        return self.per_device_eval_batch_size * max(1, self.n_gpu)

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
    def should_log(self) -> bool:
        """Whether this process writes logs (see `log_on_each_node`)."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints (see `save_on_each_node`)."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    def get_process_log_level(self) -> int:
        """The logging level for this process: `log_level` on the main process (of each node with
        `log_on_each_node`), `log_level_replica` elsewhere; "passive" keeps the s2s logger's level."""
        level = LOG_LEVELS[self.log_level if self.should_log else self.log_level_replica]
        return logging.getLogger("s2s").getEffectiveLevel() if level == -1 else level

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps: `warmup_steps` when positive, else ceil(`warmup_ratio` * `num_training_steps`)."""
        if self.warmup_steps > 0:
            return self.warmup_steps
        return math.ceil(num_training_steps * self.warmup_ratio)

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

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """All constructor arguments as plain JSON values: enums as their values, tokens redacted."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = _plain(getattr(self, f.name))
            if f.name.endswith("_token") and value is not None:
                value = _REDACTED
            out[f.name] = value
        return out

    def to_json_string(self) -> str:
        """`to_dict()` as indented, key-sorted JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_sanitized_dict(self) -> dict[str, bool | int | float | str]:
        """`to_dict()` plus the effective batch sizes, with every value a bool/int/float/str (others as their
        `str`), which is what TensorBoard's hparams accept."""
        d = {
            **self.to_dict(),
            "train_batch_size": self.train_batch_size,
            "eval_batch_size": self.eval_batch_size,
        }
        return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in d.items()}

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.to_json_string()})"

    __repr__ = __str__


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _plain(value.to_dict())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _check_choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def _at_least(name: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _normalise_report_to(value: Any) -> list[str]:
    requested = _as_list(value, name="report_to")
    if requested in (["none"], []):
        return []
    if "none" in requested:
        raise ValueError(f"report_to={requested}: 'none' cannot be combined with other reporters")
    if requested == ["all"]:
        return ["jsonl"] + (["tensorboard"] if _is_importable("tensorboard") else [])
    for name in requested:
        if name not in REPORTERS:
            raise ValueError(
                f"report_to={name!r} is not supported; choose from {list(REPORTERS)}, 'all' or 'none'"
            )
        if name == "tensorboard" and not _is_importable("tensorboard"):
            raise ValueError(
                "report_to='tensorboard' needs the tensorboard package (pip install 's2s-toolkit[tensorboard]'); "
                "or use report_to='jsonl'"
            )
    return list(dict.fromkeys(requested))
