"""Fully sharded data parallel training through ``torch.distributed.fsdp.FullyShardedDataParallel``.

What ``s2s.strategy.FSDPStrategy`` needs from FSDP, and nothing else:

- ``check_fsdp_arguments(args)``: the sharding options that cannot work, refused when the Trainer is built;
- ``wrap_fsdp(model, args)``: shard the model (``fsdp="full_shard"`` / ``"shard_grad_op"`` / ``"no_shard"``
  / ``"hybrid_shard"``, plus ``"offload"`` for CPU offload on GPUs), auto-wrapping each transformer layer
  (``fsdp_transformer_layer_cls_to_wrap``; default: the s2s ``EncoderLayer``/``DecoderLayer``, or a Hugging
  Face model's ``_no_split_modules``) or every module with ``fsdp_min_num_params`` parameters.
  ``use_orig_params`` is always on, so the optimizer sees the model's own parameters and weight decay groups
  keep working.
- ``full_state_dicts`` / ``load_full_state`` / ``load_full_optimizer_state``: checkpoints hold the **full**
  (unsharded) model as safetensors and the full optimizer state, keyed by parameter names, exactly like a
  checkpoint of a single process; so a run trained with FSDP resumes with FSDP on another number of
  processes, or without FSDP, and the model folder loads with ``from_pretrained``. Gathering is collective
  (every rank calls it); rank 0 receives the tensors (on CPU) and writes them.
- ``full_parameters(model)``: evaluation (and ``generate``) runs inside ``summon_full_params(writeback=False)``
  on the plain module: each rank gathers the full parameters once, then decodes on its own. ``generate``
  stops at a different step on every rank and ranks evaluate a different number of batches; a sharded
  forward would need every rank at every step (an all-gather per layer) and hang. The price is the full
  model in memory during evaluation, as with DDP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

# torch.distributed.fsdp is imported inside the functions that use it ("# lazy"): it takes over a second to
# import and is missing from torch builds without distributed support, and a run that does not shard never
# needs it.

DEFAULT_LAYER_CLASSES = ("EncoderLayer", "DecoderLayer")
"""The s2s Transformer's layer classes: one FSDP unit per layer (all-gathered just before it runs)."""

FSDP_CONFIG_KEYS = {
    "min_num_params": "wrap every module with at least this many parameters (like fsdp_min_num_params)",
    "transformer_layer_cls_to_wrap": "class name(s) of the layers to wrap (like fsdp_transformer_layer_cls_to_wrap)",
    "backward_prefetch": "backward_pre (default) or backward_post: when to all-gather the next unit in backward",
    "forward_prefetch": "all-gather the next unit during the current forward (default False)",
    "limit_all_gathers": "rate-limit all-gathers to bound GPU memory (default True)",
    "sync_module_states": "broadcast rank 0's weights when wrapping (default True on GPUs; CPU: not possible)",
    "offload_params": "keep parameters and gradients on the CPU between uses (GPUs only; like fsdp='... offload')",
}


def check_fsdp_arguments(args) -> None:
    """Refuse sharding options that cannot work, naming the fix: ``fsdp_config`` without ``fsdp``, unknown
    ``fsdp_config`` keys, and the flags that rebuild, compile or cast the module FSDP flattens."""
    if args.fsdp_config and not args.fsdp:
        raise ValueError(
            "fsdp_config is set but fsdp is empty: set fsdp='full_shard' (or shard_grad_op, no_shard, "
            "hybrid_shard) to shard the model, or remove fsdp_config"
        )
    if not args.fsdp:
        return
    fsdp_settings(args)  # unknown fsdp_config keys fail now, not at the first step
    names = ("auto_find_batch_size", "torch_compile", "bf16_full_eval", "fp16_full_eval")
    clashes = [name for name in names if getattr(args, name)]
    if clashes:
        raise ValueError(
            f"fsdp={args.fsdp} cannot be combined with {clashes}: they rebuild, compile or cast the "
            "module that FSDP has flattened into shards; remove them (or fsdp)"
        )


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel  # lazy

    return isinstance(model, FullyShardedDataParallel)


def fsdp_settings(args) -> dict[str, Any]:
    """``args.fsdp_config`` merged with the ``fsdp_*`` arguments; unknown keys raise, naming the known ones."""
    config = dict(args.fsdp_config or {})
    unknown = sorted(k for k in config if k.removeprefix("fsdp_") not in FSDP_CONFIG_KEYS)
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in FSDP_CONFIG_KEYS.items())
        raise ValueError(f"fsdp_config has unknown key(s) {unknown}; the known keys are {known}")
    config = {k.removeprefix("fsdp_"): v for k, v in config.items()}
    if args.fsdp_min_num_params:
        config["min_num_params"] = args.fsdp_min_num_params
    if args.fsdp_transformer_layer_cls_to_wrap:
        config["transformer_layer_cls_to_wrap"] = args.fsdp_transformer_layer_cls_to_wrap
    if "offload" in args.fsdp:
        config["offload_params"] = True
    if config.get("min_num_params") and config.get("transformer_layer_cls_to_wrap"):
        raise ValueError(
            "FSDP auto wrap: give min_num_params or transformer_layer_cls_to_wrap (in fsdp_config or the fsdp_* "
            "arguments), not both"
        )
    return config


def _class_names(value: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return [str(name) for name in value]


def layer_classes(model: nn.Module, names: str | list[str] | None) -> set[type[nn.Module]]:
    """The module classes to wrap: ``names`` (comma-separated or a list) looked up among the model's own
    modules; by default the s2s layer classes or a Hugging Face model's ``_no_split_modules``."""
    by_name: dict[str, type[nn.Module]] = {type(m).__name__: type(m) for m in model.modules()}
    if names:
        wanted = _class_names(names)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(
                f"fsdp_transformer_layer_cls_to_wrap: {missing} are not module classes of {type(model).__name__}; "
                f"its classes are {sorted(by_name)}"
            )
        return {by_name[n] for n in wanted}
    defaults = list(DEFAULT_LAYER_CLASSES) + list(getattr(model, "_no_split_modules", None) or [])
    return {by_name[n] for n in defaults if n in by_name}


def auto_wrap_policy(model: nn.Module, settings: dict[str, Any]):
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy, size_based_auto_wrap_policy  # lazy

    if settings.get("min_num_params"):
        return functools.partial(size_based_auto_wrap_policy, min_num_params=int(settings["min_num_params"]))
    classes = layer_classes(model, settings.get("transformer_layer_cls_to_wrap"))
    if not classes:
        logger.warning(
            "FSDP: %s has none of the default layer classes %s; the whole model is one FSDP unit (no memory "
            "saved in the forward). Set fsdp_transformer_layer_cls_to_wrap or fsdp_min_num_params.",
            type(model).__name__,
            DEFAULT_LAYER_CLASSES,
        )
        return None
    logger.info("FSDP: one unit per %s", sorted(c.__name__ for c in classes))
    return ModuleWrapPolicy(classes)


def wrap_fsdp(model: nn.Module, args) -> nn.Module:
    """``model`` wrapped in ``FullyShardedDataParallel`` as the arguments ask (see the module docstring)."""
    from torch.distributed.fsdp import BackwardPrefetch, CPUOffload, ShardingStrategy  # lazy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # lazy

    if is_fsdp(model):
        return model
    settings = fsdp_settings(args)
    modes = [o for o in args.fsdp if o not in ("offload", "auto_wrap")]
    strategy = ShardingStrategy[modes[0].upper()]
    device = next(model.parameters()).device
    offload = bool(settings.get("offload_params"))
    if offload and device.type == "cpu":
        raise ValueError(
            "fsdp offload moves parameters to the CPU between uses, but this run already trains on the CPU "
            "(torch's CPU offload also needs pinned accelerator memory): remove 'offload' from fsdp"
        )
    prefetch = str(settings.get("backward_prefetch", "backward_pre")).upper()
    if prefetch not in BackwardPrefetch.__members__:
        raise ValueError(
            f"fsdp_config backward_prefetch={settings['backward_prefetch']!r}: use backward_pre or backward_post"
        )
    return FSDP(
        model,
        sharding_strategy=strategy,
        auto_wrap_policy=auto_wrap_policy(model, settings),
        cpu_offload=CPUOffload(offload_params=True) if offload else None,
        backward_prefetch=BackwardPrefetch[prefetch],
        forward_prefetch=bool(settings.get("forward_prefetch", False)),
        limit_all_gathers=bool(settings.get("limit_all_gathers", True)),
        sync_module_states=_sync_module_states(settings, device),
        # CPU processes (gloo) must name their device: FSDP otherwise looks for an accelerator.
        device_id=device if device.type == "cpu" else torch.device(device.type, device.index or 0),
        use_orig_params=True,
    )


def _sync_module_states(settings: dict[str, Any], device: torch.device) -> bool:
    """Broadcast rank 0's weights when wrapping: on by default on GPUs. torch does it only for GPU tensors;
    CPU processes start from the same weights anyway (the Trainer seeds every rank alike before the model
    is built, or it is loaded from the same files)."""
    wanted = settings.get("sync_module_states")
    if device.type == "cpu":
        if wanted:
            raise ValueError(
                "fsdp_config sync_module_states=True needs GPUs (torch broadcasts only accelerator tensors); "
                "remove it on CPU"
            )
        return False
    return True if wanted is None else bool(wanted)


# ------------------------------------------------------------------------------------------- state
def _options(*, rank0_only: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions  # lazy

    # cpu_offload with full_state_dict: only rank 0 receives the tensors, on the CPU (the others get {}).
    return StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)


def full_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, *, rank0_only: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The full model and optimizer state dicts, keyed by parameter names. Collective: every rank calls it.
    With ``rank0_only`` (default) the other ranks get empty dicts; else every rank gets them, moved to CPU
    (``save_on_each_node``)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict  # lazy

    # On CPU processes every rank receives the tensors: torch's rank-0-only gathering offloads to the CPU
    # what is already there and crashes (segmentation fault in the state-dict hook, torch 2.13).
    on_cpu = next(model.parameters()).device.type == "cpu"
    options = _options(rank0_only=rank0_only and not on_cpu)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options) if optimizer else None
    if not options.cpu_offload:
        model_state = {k: v.cpu() for k, v in model_state.items()}
        optim_state = _to_cpu(optim_state)
    return model_state, optim_state


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def load_full_state(
    model: nn.Module, model_state: dict[str, torch.Tensor], *, source: str = "the checkpoint"
) -> None:
    """Load full (unsharded) weights into the sharded ``model``; every rank passes the same dict (read from the
    checkpoint folder). Missing or unexpected weights raise, naming them."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict  # lazy

    result = set_model_state_dict(model, model_state, options=_strict_false(_options(rank0_only=False)))
    tied = set(getattr(model.module, "_tied_weights_keys", None) or [])
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source} does not fit {type(model.module).__name__}: missing weights {missing[:5]}, unexpected "
            f"weights {list(result.unexpected_keys)[:5]}; checkpoint from another model?"
        )


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, optim_state: dict[str, Any]
) -> None:
    """Load a full optimizer state (keyed by parameter names, as ``full_state_dicts`` returns it) into the
    optimizer of the sharded ``model``; every rank passes the same dict."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict  # lazy

    set_optimizer_state_dict(model, optimizer, optim_state, options=_options(rank0_only=False))


def _strict_false(options):
    return dataclasses.replace(options, strict=False)


@contextlib.contextmanager
def full_parameters(model: nn.Module) -> Iterator[None]:
    """Inside: every rank holds the full parameters, and the user's module (``model.module``, which the
    Trainer evaluates) runs without any collective, so ranks may run different numbers of batches and
    decoding steps. Entering and leaving are collective. Nothing is written back. A no-op for a model that
    is not FSDP.

    ``summon_full_params`` alone is not enough: calling a nested FSDP unit (a wrapped layer) inside it
    reshards that unit after its forward, and the next call would all-gather again, i.e. wait for the other
    ranks. So the nested units are swapped for the modules they wrap while inside, and put back after."""
    if not is_fsdp(model):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # lazy

    with FSDP.summon_full_params(model, writeback=False):
        swapped = [
            (parent, name, child)
            for parent in list(model.module.modules())
            for name, child in list(parent.named_children())
            if isinstance(child, FSDP)
        ]
        for parent, name, child in swapped:
            setattr(parent, name, child.module)
        try:
            yield
        finally:
            for parent, name, child in reversed(swapped):
                setattr(parent, name, child)
