"""TrainingArguments: every knob of the Trainer, with the Hugging Face names, checked when it is built.

Each field is documented by the string right under it (the argument parser turns those into `--help`).
Every field does something. The Hugging Face arguments whose backend cannot exist here (DeepSpeed, apex,
IPEX, XPU, TPU, FairScale, Ray, the Hub) are not fields: they are one table in `s2s.arguments.refused`,
refused at construction with a message that names the argument, why, and what to use instead. The checks
run at construction live in `s2s.arguments` too, one concern per module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Literal

from s2s.arguments import aliases, checks, normalise
from s2s.arguments.aliases import AliasValue
from s2s.arguments.choices import (  # re-exported: this is where users have always imported them from
    LOG_LEVELS,
    ExplicitEnum,
    IntervalStrategy,
    OptimizerNames,
    ParallelMode,
    SchedulerType,
)
from s2s.arguments.processes import ProcessRoles
from s2s.arguments.refused import REDACTED, REFUSED_ARGUMENTS, RefusedArgument, RefusesArguments

__all__ = [
    "LOG_LEVELS",
    "ExplicitEnum",
    "IntervalStrategy",
    "OptimizerNames",
    "ParallelMode",
    "SchedulerType",
    "TrainingArguments",
]


@dataclass
class TrainingArguments(ProcessRoles, metaclass=RefusesArguments):
    """Arguments of `s2s.Trainer`; names and defaults follow Hugging Face's `TrainingArguments`.

    Construct it directly, or from the command line / JSON / YAML with `s2s.ArgumentParser`. The device and
    process properties (`device`, `world_size`, `parallel_mode`, `should_log`, ...) come from
    `s2s.arguments.processes.ProcessRoles`.
    """

    refused_arguments: ClassVar[Mapping[str, RefusedArgument]] = REFUSED_ARGUMENTS
    """Hugging Face arguments refused here, with why and what to use instead (not fields; see
    `s2s.arguments.refused`). `s2s.ArgumentParser` lists them at the end of `--help`."""

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
    """Log level of the main process: debug, info, warning, error, critical, or passive (the level the
    application set on the s2s or root logger; INFO when it set none, see `get_process_log_level`)."""

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
    """Where logs go: "jsonl" (always available), "tensorboard", "mlflow", "wandb" (each needs its package:
    pip install 's2s-toolkit[<name>]'), "none", or "all": jsonl and every one of the others that is
    installed, as Hugging Face's "all" means every installed integration."""

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

    bf16: bool | Literal["auto"] = False
    """bfloat16 mixed precision (autocast) for training, on CPU or a bf16-capable GPU. "auto": bf16 where
    the device computes it natively (an Ampere or newer GPU; a CPU with AVX512-BF16 or AMX), fp32
    elsewhere, decided at construction; on a CPU without those instructions a bf16 training step took 32x
    as long as an fp32 one, so True there is warned about."""

    fp16: bool = False
    """float16 mixed precision with a gradient scaler; needs a CUDA device."""

    half_precision_backend: Literal["auto", "cuda_amp", "cpu_amp"] = "auto"
    """Mixed-precision backend: "auto", "cuda_amp" or "cpu_amp". It is torch autocast on the training device
    either way; naming the other device's backend is refused (set `use_cpu` to choose the device)."""

    fp16_backend: str = "auto"
    """Deprecated name of `half_precision_backend`."""

    bf16_full_eval: bool = False
    """Evaluate with the model cast to bfloat16 (less memory, slightly different metrics; faster where the
    hardware computes bf16, several times slower on a CPU without bf16 instructions, which is warned about)."""

    fp16_full_eval: bool = False
    """Evaluate with the model cast to float16; needs a CUDA device."""

    tf32: bool | None = None
    """Allow TF32 matmuls on Ampere or newer GPUs (set process-wide at construction); None leaves torch's
    setting alone."""

    torch_compile: bool = False
    """Compile the model with `torch.compile`."""

    torch_compile_backend: str | None = None
    """Backend for `torch.compile` (e.g. "inductor"); setting it turns `torch_compile` on."""

    torch_compile_mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = None
    """Mode for `torch.compile`: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs; setting
    it turns `torch_compile` on."""

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

    def __post_init__(self) -> None:
        aliases.resolve_deprecated_aliases(self)
        normalise.normalise_choices(self)
        checks.check_ranges(self)
        checks.check_dependent_options(self)
        checks.check_precision(self)
        checks.check_intervals(self)
        checks.check_lr_schedule(self)
        checks.check_best_model(self)
        checks.fill_defaults(self)
        self._initialised = True

    def __setattr__(self, name: str, value: Any) -> None:
        # The two names of the evaluation strategy stay in step even when one is assigned after construction.
        if name in ("eval_strategy", "evaluation_strategy") and self.__dict__.get("_initialised"):
            value = IntervalStrategy(value)
            object.__setattr__(self, "eval_strategy", value)
            object.__setattr__(self, "evaluation_strategy", AliasValue(value.value))
            return
        if name in self.refused_arguments and name not in self.__dataclass_fields__:
            self.refused_arguments[name].check(name, value)  # raises unless it asks for nothing
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a refused argument reads as the value that asks for nothing,
        # so Hugging Face scripts that test `if training_args.push_to_hub:` run unchanged.
        refused = type(self).refused_arguments.get(name)
        if refused is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return refused.off

    # ------------------------------------------------------------ batches and schedule
    @property
    def train_batch_size(self) -> int:
        """Examples per training micro-batch in this process."""
        return self.per_device_train_batch_size * max(1, self.n_gpu)

    @property
    def eval_batch_size(self) -> int:
        """Examples per evaluation batch in this process."""
        return self.per_device_eval_batch_size * max(1, self.n_gpu)

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps: `warmup_steps` when positive, else ceil(`warmup_ratio` * `num_training_steps`)."""
        if self.warmup_steps > 0:
            return self.warmup_steps
        return math.ceil(num_training_steps * self.warmup_ratio)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """All constructor arguments as plain JSON values: enums as their values, tokens (fields whose name
        ends in `_token`, e.g. in a subclass) redacted."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = _plain(getattr(self, f.name))
            if f.name.endswith("_token") and value is not None:
                value = REDACTED
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
