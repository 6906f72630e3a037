"""Deprecated argument names, resolved into their replacements when `TrainingArguments` is built.

Each old name still works (scripts and configs written for older Hugging Face versions use them) and warns
with the new name, except `evaluation_strategy`: it is this toolkit's first name of `eval_strategy`, so the
two stay in step in both directions, also when one is assigned after construction.
"""

from __future__ import annotations

import warnings
from typing import Any

from s2s.arguments.choices import IntervalStrategy, OptimizerNames


class AliasValue(str):
    """The value of `evaluation_strategy`: equal to `eval_strategy`'s value (as a string and to the enum), but
    recognisable when it comes back into the constructor as a copy rather than as a user's choice."""

    __slots__ = ()


def resolve_deprecated_aliases(args: Any) -> None:
    """Map each deprecated name onto its replacement, refusing two names that disagree."""
    _resolve_evaluation_strategy(args)
    # stacklevel 5: past this function, __post_init__, __init__ and the metaclass's __call__, to the caller
    if args.adafactor:
        warnings.warn("adafactor=True is deprecated; use optim='adafactor'", FutureWarning, stacklevel=5)
        args.optim = OptimizerNames.ADAFACTOR.value
        args.adafactor = False  # mapped; a later dataclasses.replace(args, optim=...) must not undo it
    if args.no_cuda:
        warnings.warn("no_cuda is deprecated; use use_cpu=True", FutureWarning, stacklevel=5)
        args.use_cpu = True
    if args.fp16_backend != "auto":
        warnings.warn("fp16_backend is deprecated; use half_precision_backend", FutureWarning, stacklevel=5)
        if args.half_precision_backend not in ("auto", args.fp16_backend):
            raise ValueError(
                f"fp16_backend={args.fp16_backend!r} and half_precision_backend="
                f"{args.half_precision_backend!r} disagree; give only half_precision_backend"
            )
        args.half_precision_backend = args.fp16_backend
        args.fp16_backend = "auto"  # mapped, as for adafactor
    if args.torch_compile_backend is not None or args.torch_compile_mode is not None:
        args.torch_compile = True


def _resolve_evaluation_strategy(args: Any) -> None:
    alias = args.evaluation_strategy
    # An AliasValue is the arguments' own echo of eval_strategy, handed back by dataclasses.replace or
    # TrainingArguments(**args.to_dict()): it must not undo a change made through eval_strategy.
    if alias is not None and not isinstance(alias, AliasValue):
        new, old = IntervalStrategy(args.eval_strategy), IntervalStrategy(alias)
        if new is not IntervalStrategy.NO and new is not old:
            raise ValueError(
                f"eval_strategy={new.value!r} and evaluation_strategy={old.value!r} disagree: they are two "
                "names of one argument, give only one (eval_strategy)"
            )
        args.eval_strategy = old
    args.eval_strategy = IntervalStrategy(args.eval_strategy)
    args.evaluation_strategy = AliasValue(args.eval_strategy.value)
