"""Turn what a user may write (strings, lists, JSON text) into the types the Trainer reads, checking choices.

A command line or a YAML file gives strings; a script gives enums, lists or dicts. After `normalise_choices`
every choice is its enum or a checked string, every list a list of strings, every JSON argument a dict.
"""

from __future__ import annotations

import importlib.util
import json
from enum import Enum
from typing import Any

from s2s.arguments.choices import (
    DDP_BACKENDS,
    DEBUG_OPTIONS,
    FSDP_OPTIONS,
    HALF_PRECISION_BACKENDS,
    LOG_LEVELS,
    OPTIONAL_REPORTERS,
    REPORTERS,
    TORCH_COMPILE_MODES,
    IntervalStrategy,
    OptimizerNames,
    SchedulerType,
)
from s2s.arguments.refused import refuse_value


def normalise_choices(args: Any) -> None:
    """Convert and check every argument that takes one of a fixed set of values, a list or JSON."""
    args.logging_strategy = IntervalStrategy(args.logging_strategy)
    args.save_strategy = IntervalStrategy(args.save_strategy)
    args.lr_scheduler_type = SchedulerType(args.lr_scheduler_type)
    optim = args.optim.value if isinstance(args.optim, Enum) else str(args.optim)
    refuse_value("optim", optim)
    args.optim = OptimizerNames(optim)
    check_choice("log_level", args.log_level, LOG_LEVELS)
    check_choice("log_level_replica", args.log_level_replica, LOG_LEVELS)
    refuse_value("half_precision_backend", args.half_precision_backend)
    check_choice("half_precision_backend", args.half_precision_backend, HALF_PRECISION_BACKENDS)
    if args.ddp_backend is not None:
        check_choice("ddp_backend", args.ddp_backend, DDP_BACKENDS)
    if args.torch_compile_mode is not None:
        check_choice("torch_compile_mode", args.torch_compile_mode, TORCH_COMPILE_MODES)
    _normalise_fsdp(args)
    args.debug = as_list(args.debug, name="debug")
    for option in args.debug:
        refuse_value("debug", option)
        check_choice("debug", option, DEBUG_OPTIONS)
    args.lr_scheduler_kwargs = as_json_dict(args.lr_scheduler_kwargs, name="lr_scheduler_kwargs") or {}
    args.report_to = normalise_report_to(args.report_to)
    if args.label_names is not None:
        args.label_names = as_list(args.label_names, name="label_names")
    if args.optim_args:
        from s2s.optimization import check_optim_args

        check_optim_args(args.optim.value, args.optim_args)  # fail now on a typo, not at step 0


def _normalise_fsdp(args: Any) -> None:
    args.fsdp = as_list(args.fsdp, name="fsdp")
    for option in args.fsdp:
        check_choice("fsdp", option, FSDP_OPTIONS)
    shard_modes = [o for o in args.fsdp if o not in ("offload", "auto_wrap")]
    if args.fsdp and len(shard_modes) != 1:
        raise ValueError(
            f"fsdp={args.fsdp} needs exactly one of full_shard, shard_grad_op, no_shard, hybrid_shard "
            "(plus optionally offload and auto_wrap)"
        )
    args.fsdp_config = as_json_dict(args.fsdp_config, name="fsdp_config", allow_path=True)


def check_choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def is_importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def as_list(value: Any, *, name: str) -> list[str]:
    """Accept a list, a whitespace/comma separated string, or None/False/'' (empty)."""
    if value is None or value is False or value == "":
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list | tuple):
        return [str(v.value if isinstance(v, Enum) else v) for v in value]
    raise TypeError(f"{name} must be a string or a list of strings, got {type(value).__name__}")


def as_json_dict(value: Any, *, name: str, allow_path: bool = False) -> dict[str, Any] | str | None:
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


def normalise_report_to(value: Any) -> list[str]:
    """The reporters to use: "all" expands to jsonl plus every optional reporter whose package is installed
    (as Hugging Face's "all" means every installed integration), "none" (or nothing) to none. A reporter
    named explicitly must be installed: the error says which extra to install."""
    requested = as_list(value, name="report_to")
    if requested in (["none"], []):
        return []
    if "none" in requested:
        raise ValueError(f"report_to={requested}: 'none' cannot be combined with other reporters")
    if requested == ["all"]:
        return ["jsonl"] + [name for name in OPTIONAL_REPORTERS if is_importable(name)]
    for name in requested:
        if name not in REPORTERS:
            raise ValueError(
                f"report_to={name!r} is not supported; choose from {list(REPORTERS)}, 'all' or 'none'"
            )
        if name in OPTIONAL_REPORTERS and not is_importable(name):
            raise ValueError(
                f"report_to={name!r} needs the {name} package (pip install 's2s-toolkit[{name}]'); "
                "or use report_to='jsonl'"
            )
    return list(dict.fromkeys(requested))
