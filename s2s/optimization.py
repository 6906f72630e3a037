"""Optimizers and learning-rate schedules for the Trainer.

- `create_optimizer(model, args)`: the optimizer named by `args.optim`, with weight decay on every parameter
  except biases and normalisation weights, and `args.optim_args` ("key=value,...") applied.
- `get_scheduler(name, optimizer, num_warmup_steps=..., num_training_steps=...)` and
  `create_scheduler(optimizer, args, num_training_steps)`: the Hugging Face schedules, built on `LambdaLR`
  with plain functions so `scheduler.state_dict()` holds only numbers and loads with `weights_only=True`.
- `is_metric_scheduler(scheduler)`: True for `reduce_lr_on_plateau`, which the trainer steps with the
  evaluation metric after each evaluation instead of after each optimizer step.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

if TYPE_CHECKING:
    from s2s.training_args import TrainingArguments

# Keyword arguments each schedule takes through `lr_scheduler_kwargs` (beyond warmup and total steps).
SCHEDULER_KWARGS: dict[str, tuple[str, ...]] = {
    "linear": (),
    "cosine": ("num_cycles",),
    "cosine_with_restarts": ("num_cycles",),
    "polynomial": ("lr_end", "power"),
    "constant": (),
    "constant_with_warmup": (),
    "inverse_sqrt": ("timescale",),
    "reduce_lr_on_plateau": (
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lr",
        "eps",
    ),
}
_NORM_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


# ---------------------------------------------------------------------------------------------- optim_args
def parse_optim_args(text: str | None) -> dict[str, Any]:
    """Parse "key=value,key=value" into a dict; values are Python literals (numbers, True/False/None,
    tuples) or else plain strings. `"momentum=0.9,nesterov=True"` -> `{"momentum": 0.9, "nesterov": True}`."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for item in _split_top_level(text):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"optim_args entry {item.strip()!r} is not key=value (in {text!r})")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses, so "betas=(0.9,0.98),eps=1e-9" keeps the tuple whole."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


# ---------------------------------------------------------------------------------------------- optimizers
def get_decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that get weight decay: everything except biases, the weights of
    normalisation layers (found by module type, including custom classes whose name contains "Norm", such as
    T5's layer norm) and any other parameter with fewer than two dimensions."""
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower():
            prefix = f"{module_name}." if module_name else ""
            no_decay.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return [
        name
        for name, param in model.named_parameters()
        if param.requires_grad and param.ndim >= 2 and name not in no_decay and not name.endswith("bias")
    ]


def get_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups, "decay" (with `weight_decay`) and "no_decay" (0.0); empty groups are left out."""
    decay = set(get_decay_parameter_names(model))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"name": "decay", "params": [p for n, p in params if n in decay], "weight_decay": weight_decay},
        {"name": "no_decay", "params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return groups


def create_optimizer(model: nn.Module, args: TrainingArguments) -> Optimizer:
    """The optimizer named by `args.optim` over `model`'s trainable parameters, with `args.learning_rate`,
    Adam betas/epsilon where they apply, decoupled weight decay (AdamW, Adafactor) or L2 (SGD, Adagrad,
    RMSprop) on the decay group, and `args.optim_args` passed on as keyword arguments."""
    name = str(args.optim)
    extra = check_optim_args(name, args.optim_args)
    kwargs: dict[str, Any] = {"lr": args.learning_rate}
    if name.startswith("adamw"):
        kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    if name == "adamw_torch_fused":
        kwargs["fused"] = True
    groups = get_parameter_groups(model, args.weight_decay)
    return optimizer_class(name)(groups, **{**kwargs, **extra})


def optimizer_class(name: str) -> type[Optimizer]:
    """The optimizer class behind an `optim` name."""
    classes = {
        "adamw_torch": torch.optim.AdamW,
        "adamw_hf": torch.optim.AdamW,  # Hugging Face's own AdamW is deprecated; torch's is the same algorithm
        "adamw_torch_fused": torch.optim.AdamW,
        "adafactor": Adafactor,
        "sgd": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop,
    }
    if name not in classes:
        raise ValueError(f"optim={name!r} is not one of {sorted(classes)}")
    return classes[name]


def check_optim_args(name: str, optim_args: str | None) -> dict[str, Any]:
    """Parse `optim_args` and check each key is an argument of the optimizer `name` (so a typo fails when
    the arguments are built, not at the first step)."""
    cls = optimizer_class(name)
    extra = parse_optim_args(optim_args)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    unknown = [k for k in extra if k not in accepted]
    if unknown:
        raise ValueError(
            f"optim_args {unknown} are not arguments of {cls.__name__} ({name}); it takes {accepted}"
        )
    return extra


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern, 2018) with an explicit learning rate, as Hugging Face's Trainer uses it
    (`scale_parameter=False, relative_step=False`), so `learning_rate` and the schedules work as for AdamW.

    Matrices keep factored second moments (a row and a column vector), other tensors a full one. The update
    is RMS-clipped to `clip_threshold`; `beta1` adds first-moment momentum (off by default, which saves the
    memory). `scale_parameter=True` multiplies the step by the parameter's RMS (at least `eps[1]`).
    (`torch.optim.Adafactor` always scales by the parameter RMS and caps the rate at 1/sqrt(step), so the same
    `learning_rate` would give much smaller steps than a Hugging Face user expects.)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"Adafactor lr must be >= 0, got {lr}")
        if not -1 <= decay_rate <= 0:
            raise ValueError(f"Adafactor decay_rate must be in [-1, 0], got {decay_rate}")
        if beta1 is not None and not 0 <= beta1 < 1:
            raise ValueError(f"Adafactor beta1 must be None or in [0, 1), got {beta1}")
        defaults = {
            "lr": lr,
            "eps": tuple(eps),
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
            "beta1": beta1,
            "weight_decay": weight_decay,
            "scale_parameter": scale_parameter,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _rms(t: torch.Tensor) -> torch.Tensor:
        return t.norm(2) / math.sqrt(t.numel())

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eps_sq, eps_scale = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                grad = p.grad.float()
                state = self.state[p]
                factored = grad.ndim >= 2
                if not state:
                    state["step"] = 0
                    if factored:
                        state["exp_avg_sq_row"] = grad.new_zeros(grad.shape[:-1])
                        state["exp_avg_sq_col"] = grad.new_zeros(grad.shape[:-2] + grad.shape[-1:])
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                    if group["beta1"] is not None:
                        state["exp_avg"] = torch.zeros_like(grad)
                state["step"] += 1
                p_fp32 = p.float()
                lr = group["lr"]
                if group["scale_parameter"]:
                    lr = lr * max(eps_scale, self._rms(p_fp32).item())
                beta2t = 1.0 - state["step"] ** group["decay_rate"]
                sq = grad.square() + eps_sq
                if factored:
                    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                    row.mul_(beta2t).add_(sq.mean(dim=-1), alpha=1 - beta2t)
                    col.mul_(beta2t).add_(sq.mean(dim=-2), alpha=1 - beta2t)
                    # rank-1 estimate of the second moment: outer(row, col) / mean(row)
                    r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
                    update = r_factor * col.unsqueeze(-2).rsqrt() * grad
                else:
                    state["exp_avg_sq"].mul_(beta2t).add_(sq, alpha=1 - beta2t)
                    update = state["exp_avg_sq"].rsqrt() * grad
                update.div_((self._rms(update) / group["clip_threshold"]).clamp(min=1.0)).mul_(lr)
                if group["beta1"] is not None:
                    state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
                    update = state["exp_avg"]
                if group["weight_decay"]:
                    p_fp32.add_(p_fp32, alpha=-group["weight_decay"] * lr)
                p_fp32.sub_(update)
                if p.dtype != torch.float32:  # p.float() was a copy; for float32 it is p itself
                    p.copy_(p_fp32)
        return loss


# ---------------------------------------------------------------------------------------------- schedulers
def check_scheduler_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise when `kwargs` has a key the schedule `name` does not take, listing what it takes."""
    if name not in SCHEDULER_KWARGS:
        raise ValueError(f"lr_scheduler_type={name!r} is not one of {list(SCHEDULER_KWARGS)}")
    allowed = SCHEDULER_KWARGS[name]
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        hints = {k: difflib.get_close_matches(k, allowed, n=1) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k, m in hints.items() if m)
        raise ValueError(
            f"lr_scheduler_kwargs {unknown} are not arguments of the {name!r} schedule, which takes "
            f"{list(allowed) or 'none'}" + (f" ({hint})" if hint else "")
        )


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    num_warmup_steps: int = 0,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> LRScheduler | ReduceLROnPlateau:
    """The learning-rate schedule `name` (see `SCHEDULER_KWARGS` for names and their extra arguments).

    All but `reduce_lr_on_plateau` warm up linearly from 0 to the optimizer's learning rate over
    `num_warmup_steps`, then follow their shape until `num_training_steps`; they are stepped once per
    optimizer step. `reduce_lr_on_plateau` takes no warmup and is stepped with a metric after evaluation.
    """
    name = str(name)
    kwargs = dict(scheduler_specific_kwargs or {})
    check_scheduler_kwargs(name, kwargs)
    if num_warmup_steps < 0:
        raise ValueError(f"num_warmup_steps must be >= 0, got {num_warmup_steps}")
    if name == "reduce_lr_on_plateau":
        if num_warmup_steps:
            raise ValueError(
                "reduce_lr_on_plateau has no warmup; set warmup_steps=0 and warmup_ratio=0, or pick another "
                "lr_scheduler_type"
            )
        return ReduceLROnPlateau(optimizer, **kwargs)
    if name in ("constant", "constant_with_warmup"):
        if name == "constant" and num_warmup_steps:
            raise ValueError("lr_scheduler_type='constant' has no warmup; use 'constant_with_warmup'")
        return LambdaLR(optimizer, _constant_with_warmup(num_warmup_steps))
    if name == "inverse_sqrt":
        return LambdaLR(optimizer, _inverse_sqrt(num_warmup_steps, kwargs.get("timescale")))
    if num_training_steps is None or num_training_steps <= 0:
        raise ValueError(f"the {name!r} schedule needs num_training_steps > 0, got {num_training_steps}")
    if name == "linear":
        return LambdaLR(optimizer, _linear(num_warmup_steps, num_training_steps))
    if name == "cosine":
        return LambdaLR(
            optimizer, _cosine(num_warmup_steps, num_training_steps, kwargs.get("num_cycles", 0.5))
        )
    if name == "cosine_with_restarts":
        cycles = kwargs.get("num_cycles", 1)
        return LambdaLR(optimizer, _cosine_with_restarts(num_warmup_steps, num_training_steps, cycles))
    # polynomial
    lr_init = optimizer.defaults["lr"]
    lr_end, power = kwargs.get("lr_end", 1e-7), kwargs.get("power", 1.0)
    if not lr_init > lr_end:
        raise ValueError(
            f"polynomial schedule: lr_end ({lr_end}) must be smaller than the learning rate ({lr_init})"
        )
    return LambdaLR(optimizer, _polynomial(num_warmup_steps, num_training_steps, lr_init, lr_end, power))


def create_scheduler(
    optimizer: Optimizer, args: TrainingArguments, num_training_steps: int
) -> LRScheduler | ReduceLROnPlateau:
    """The schedule of `args.lr_scheduler_type` with `args.lr_scheduler_kwargs` and warmup from
    `args.get_warmup_steps`. For `reduce_lr_on_plateau`, `mode` defaults to "max" when a greater
    `metric_for_best_model` is better (e.g. BLEU), "min" otherwise (e.g. loss)."""
    name = str(args.lr_scheduler_type)
    kwargs = dict(args.lr_scheduler_kwargs)
    if name == "reduce_lr_on_plateau":
        kwargs.setdefault("mode", "max" if args.greater_is_better else "min")
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(num_training_steps),
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=kwargs,
    )


def is_metric_scheduler(scheduler: object) -> bool:
    """True when the scheduler is stepped with an evaluation metric (`scheduler.step(metric)`)."""
    return isinstance(scheduler, ReduceLROnPlateau)


# The schedule shapes: factors of the peak learning rate at a given optimizer step. They are closures (plain
# functions), which `LambdaLR.state_dict()` leaves out: the state is only numbers, and the factor is
# recomputed from `last_epoch` after `load_state_dict`.
def _warmup(step: int, warmup: int) -> float:
    return step / max(1, warmup)


def _constant_with_warmup(warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return _warmup(step, warmup) if step < warmup else 1.0

    return factor


def _linear(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _cosine(warmup: int, total: int, num_cycles: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    return factor


def _cosine_with_restarts(warmup: int, total: int, num_cycles: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))

    return factor


def _polynomial(
    warmup: int, total: int, lr_init: float, lr_end: float, power: float
) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        if step > total:
            return lr_end / lr_init
        remaining = 1 - (step - warmup) / max(1, total - warmup)
        return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init

    return factor


def _inverse_sqrt(warmup: int, timescale: int | None) -> Callable[[int], float]:
    timescale = timescale if timescale is not None else (warmup or 10_000)

    def factor(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        shift = timescale - warmup
        return 1.0 / math.sqrt((step + shift) / timescale)

    return factor
