"""The Hugging Face arguments this toolkit cannot honour, in one table: why, and what to use instead.

A refused argument is not a dataclass field, so `dataclasses.fields(TrainingArguments)` lists only arguments
that do something. It is still recognised wherever an argument can be given: as a keyword of the
constructor (and of `dataclasses.replace`), on the command line, and in JSON/YAML config files read by
`s2s.ArgumentParser`. Given at the value that asks for nothing (Hugging Face's default: `push_to_hub=False`,
`deepspeed=None`, ...) it is accepted, because that is exactly what happens here; any other value raises a
`ValueError` that names it, says why, and says what to use instead. Reading one (`args.push_to_hub`) gives
that value, so scripts written for Hugging Face that test `if training_args.push_to_hub:` run unchanged.

Values refused for arguments that otherwise work (`optim="adamw_apex_fused"`, ...) are in `REFUSED_VALUES`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REDACTED = "<REDACTED>"


@dataclass(frozen=True)
class Refusal:
    """Why a setting cannot be honoured here, and what to do instead."""

    why: str
    instead: str

    def message(self, name: str, shown: str) -> str:
        return f"{name}={shown}: {self.why}; {self.instead}"


@dataclass(frozen=True)
class RefusedArgument(Refusal):
    """A refused argument: `off` is the value that asks for nothing (accepted, and what reading it gives);
    `secret` keeps the given value out of the error message (a token must not end up in a log)."""

    off: Any = None
    secret: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise unless `value` is the value that asks for nothing."""
        if value != self.off:
            raise ValueError(self.message(name, REDACTED if self.secret else repr(value)))


_HUB_ONLY = "it is only meaningful with push_to_hub, which is not supported"

REFUSED_ARGUMENTS: Mapping[str, RefusedArgument] = {
    "deepspeed": RefusedArgument(
        "DeepSpeed is not supported (s2s has no DeepSpeed engine; installing deepspeed does not add one)",
        "use fsdp='full_shard' for sharded training",
    ),
    "sharded_ddp": RefusedArgument(
        "FairScale sharded DDP is not supported",
        "use fsdp='shard_grad_op' (or 'full_shard') from torch.distributed.fsdp",
        off="",
    ),
    "fp16_opt_level": RefusedArgument(
        "opt levels belong to NVIDIA apex, which is not supported",
        "fp16=True uses torch autocast with a gradient scaler; remove fp16_opt_level",
        off="O1",
    ),
    "use_ipex": RefusedArgument(
        "Intel Extension for PyTorch is not supported",
        "bf16=True gives CPU mixed precision with plain torch",
        off=False,
    ),
    "xpu_backend": RefusedArgument(
        "Intel XPU devices are not supported", "use ddp_backend='gloo' (CPU) or 'nccl' (CUDA)"
    ),
    "tpu_num_cores": RefusedArgument(
        "TPUs are not supported", "train on CPU or CUDA (one process per GPU with torchrun)"
    ),
    "jit_mode_eval": RefusedArgument(
        "TorchScript tracing is not supported", "use torch_compile=True", off=False
    ),
    "torchdynamo": RefusedArgument(
        "a deprecated name that Hugging Face replaced",
        "use torch_compile_backend with the same value (e.g. torch_compile_backend='inductor')",
    ),
    "ray_scope": RefusedArgument(
        "Ray Tune hyper-parameter search is not supported",
        "use Trainer.hyperparameter_search(backend='optuna')",
        off="last",
    ),
    "push_to_hub": RefusedArgument(
        "pushing to the Hugging Face Hub is not supported (this toolkit works offline)",
        "copy output_dir yourself, or use huggingface_hub.upload_folder",
        off=False,
    ),
    "hub_model_id": RefusedArgument(_HUB_ONLY, "remove it"),
    "hub_strategy": RefusedArgument(_HUB_ONLY, "remove it", off="every_save"),
    "hub_token": RefusedArgument(_HUB_ONLY, "remove it", secret=True),
    "hub_private_repo": RefusedArgument(_HUB_ONLY, "remove it", off=False),
}

# Values of working arguments whose backend cannot exist here: argument -> value -> refusal.
REFUSED_VALUES: Mapping[str, Mapping[str, Refusal]] = {
    "optim": {
        "adamw_apex_fused": Refusal(
            "NVIDIA apex is not supported", "use optim='adamw_torch_fused' (fused AdamW in torch)"
        ),
        "adamw_anyprecision": Refusal(
            "AnyPrecisionAdamW (torchdistx) is not supported", "use optim='adamw_torch' with bf16=True"
        ),
    },
    "half_precision_backend": {
        "apex": Refusal(
            "NVIDIA apex is not supported", "use 'auto' (torch autocast, with a gradient scaler for fp16)"
        ),
    },
    "debug": {
        "tpu_metrics_debug": Refusal("TPUs are not supported", "use 'underflow_overflow'"),
    },
}


def refuse_value(name: str, value: Any) -> None:
    """Raise when `value` is one of the refused values of argument `name`."""
    refusal = REFUSED_VALUES.get(name, {}).get(value) if isinstance(value, str) else None
    if refusal is not None:
        raise ValueError(refusal.message(name, repr(value)))


class RefusesArguments(type):
    """Metaclass of `TrainingArguments`: checks the refused arguments among a constructor's keywords and
    drops those given at their harmless value, before the dataclass `__init__` (which does not know them,
    since they are not fields) sees the keywords. A subclass that declares one of them as a real field
    takes it over: that name is then passed through."""

    refused_arguments: Mapping[str, RefusedArgument] = {}

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = getattr(cls, "__dataclass_fields__", {})
        for name in [n for n in kwargs if n in cls.refused_arguments and n not in fields]:
            cls.refused_arguments[name].check(name, kwargs.pop(name))
        return super().__call__(*args, **kwargs)


def refused_help(table: Mapping[str, RefusedArgument]) -> str:
    """The refused arguments for the end of `--help`: each with the value that is accepted, why, and what
    to use instead."""
    lines = [
        "refused arguments (Hugging Face names this toolkit cannot honour; each is accepted only at the value",
        "in brackets, which asks for nothing):",
    ]
    for name, refused in sorted(table.items()):
        text = f"--{name} [{refused.off!r}]: {refused.why}; {refused.instead}"
        lines += textwrap.wrap(text, width=108, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)
