"""The distribution strategy on its own: one process here, and 2 CPU processes (gloo) for DDP and FSDP.

Each method is checked against what the trainer relies on: collectives that sum over processes (the
identity in one process), the model wrapped once and unwrapped back to the user's module, full state dicts
gathered from FSDP shards and loaded back into them, and evaluation on full parameters without collectives.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from s2s.checkpointing import CheckpointError, save_model_weights
from s2s.strategy import DDPStrategy, DistributionStrategy, FSDPStrategy, choose_strategy
from s2s.training_args import TrainingArguments
from tests.s2s.test_distributed import run_world, tiny_model


def cpu_args(tmp_path, **overrides) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **overrides)


# ------------------------------------------------------------------------------------------- one process
def test_one_process_gets_the_plain_strategy_whose_collectives_are_identities(tmp_path):
    strategy = choose_strategy(cpu_args(tmp_path))
    assert type(strategy) is DistributionStrategy
    assert (strategy.world_size, strategy.rank, strategy.is_world_process_zero) == (1, 0, True)
    tensor = torch.tensor([1.0, 2.0])
    assert strategy.all_reduce_sum(7) == 7 and strategy.all_reduce_sum(tensor) is tensor
    assert strategy.any_process(True) and not strategy.any_process(False)
    assert strategy.gather_rng_states() is None  # this process's RNGs alone: rng_state.pt
    strategy.barrier()  # nothing to wait for


def test_fsdp_in_one_process_warns_and_picks_the_plain_strategy(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="s2s.strategy"):
        strategy = choose_strategy(cpu_args(tmp_path, fsdp="full_shard"))
    assert type(strategy) is DistributionStrategy
    assert "nothing to shard" in caplog.text and "torchrun" in caplog.text


def test_sharding_options_that_cannot_work_are_refused_when_chosen(tmp_path):
    with pytest.raises(ValueError, match="fsdp_config is set but fsdp is empty"):
        choose_strategy(cpu_args(tmp_path, fsdp_config={"forward_prefetch": True}))
    with pytest.raises(ValueError, match=r"cannot be combined with \['torch_compile'\]"):
        choose_strategy(cpu_args(tmp_path, fsdp="full_shard", torch_compile=True))


def test_place_moves_the_model_and_the_batch_tensors_to_the_device(tmp_path):
    strategy = choose_strategy(cpu_args(tmp_path))
    model = strategy.place(torch.nn.Linear(2, 2).double())
    assert next(model.parameters()).device == torch.device("cpu")
    batch = strategy.place_batch({"input_ids": torch.ones(2, 3), "ids": [1, 2]})
    assert batch["input_ids"].device == torch.device("cpu") and batch["ids"] == [1, 2]


def test_wrap_compiles_only_when_asked_and_unwrap_returns_the_users_module(tmp_path):
    model = tiny_model()
    plain = choose_strategy(cpu_args(tmp_path))
    assert plain.wrap(model) is model and plain.unwrap(model) is model
    compiling = choose_strategy(cpu_args(tmp_path, torch_compile=True))
    compiled = compiling.wrap(model)  # lazily: nothing is compiled before the first call
    assert compiled is not model and compiling.unwrap(compiled) is model


def test_plain_state_is_read_from_the_modules_and_loaded_with_named_errors(tmp_path):
    strategy = choose_strategy(cpu_args(tmp_path))
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert strategy.full_state_dicts(model, optimizer) == (None, None)  # no copy: the checkpoint reads them
    save_model_weights(model, tmp_path / "weights")
    fresh = tiny_model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    strategy.load_model_state(fresh, tmp_path / "weights")
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        strategy.load_model_state(fresh, tmp_path)


def test_plain_contexts_change_nothing(tmp_path):
    strategy = choose_strategy(cpu_args(tmp_path))
    model = tiny_model()
    with strategy.full_parameters(model), strategy.accumulating(model):
        assert strategy.unwrap(model) is model


# ------------------------------------------------------------------------------------------- 2 processes
def _distributed_scenario(rank: int, out: Path) -> None:
    report: dict = {}
    ddp = choose_strategy(cpu_args(out, ddp_timeout=120))  # creates the process group from the environment
    report["ddp"] = _check_ddp(ddp, rank)
    fsdp = choose_strategy(cpu_args(out, fsdp="full_shard", ddp_timeout=120))
    report["fsdp"] = _check_fsdp(fsdp, rank, out)
    (out / f"rank{rank}.json").write_text(json.dumps(report))


def _check_ddp(strategy, rank: int) -> dict:
    model = tiny_model()
    wrapped = strategy.wrap(model)
    batch = {"input_ids": torch.tensor([[5 + rank, 6, 3]]), "labels": torch.tensor([[7, 3]])}
    with strategy.accumulating(wrapped):  # no all-reduce: each rank keeps its own gradient
        wrapped(**batch).loss.backward()
    local = model.get_decoder_embeddings().weight.grad.clone()
    gathered = [torch.zeros_like(local) for _ in range(2)]
    dist.all_gather(gathered, local)
    return {
        "type": type(strategy).__name__,
        "wrapped": type(wrapped).__name__,
        "unwrapped_is_model": strategy.unwrap(wrapped) is model,
        "world_size": strategy.world_size,
        "rank": strategy.rank,
        "sum_int": strategy.all_reduce_sum(rank + 1),
        "sum_float": strategy.all_reduce_sum(0.5 * (rank + 1)),
        "sum_tensor": strategy.all_reduce_sum(torch.tensor([rank, 1.0])).tolist(),
        "any_rank_one": strategy.any_process(rank == 1),
        "any_none": strategy.any_process(False),
        "rng_states": len(strategy.gather_rng_states()),
        "no_sync_kept_local_gradients": not torch.equal(gathered[0], gathered[1]),
    }


def _check_fsdp(strategy, rank: int, out: Path) -> dict:
    torch.manual_seed(1)
    model = tiny_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    names = sorted(n for n, _ in model.named_parameters())  # before FSDP nests its units into the module
    wrapped = strategy.wrap(model)
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=1e-2)
    batch = {"input_ids": torch.tensor([[5 + rank, 6, 3]]), "labels": torch.tensor([[7, 3]])}
    wrapped(**batch).loss.backward()
    optimizer.step()
    full, optim_state = strategy.full_state_dicts(wrapped, optimizer)  # collective
    # Another model's weights go to disk, then into the shards; gathering again must give them back.
    other = tiny_model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(2.0)
    if rank == 0:
        save_model_weights(other, out / "other")
        torch.save(optim_state, out / "optimizer.pt")
    strategy.barrier()
    wrapped(**batch).loss.backward()
    optimizer.step()  # the optimizer state moves on: loading must put the saved one back
    strategy.load_model_state(wrapped, out / "other")
    strategy.load_optimizer_state(wrapped, optimizer, out)
    reloaded, reloaded_optim = strategy.full_state_dicts(wrapped, optimizer)
    with strategy.full_parameters(wrapped):  # rank 0 runs 3 forwards, rank 1 one: no collective inside
        module = strategy.unwrap(wrapped)
        for _ in range(3 if rank == 0 else 1):
            module(**batch)
    return {
        "type": type(strategy).__name__,
        "wrapped": type(wrapped).__name__,
        "wrapped_once": strategy.wrap(model) is wrapped,
        "unwrapped_is_model": strategy.unwrap(wrapped) is model,
        "full_keys_match": set(full) == set(original),
        "full_shapes_match": all(full[k].shape == v.shape for k, v in original.items()),
        "trained": any(not torch.equal(full[k], v) for k, v in original.items()),
        "optimizer_state_keys": sorted(optim_state["state"]),
        "parameter_names": names,
        "loaded_into_shards": all(torch.equal(reloaded[k], v) for k, v in other.state_dict().items()),
        "optimizer_reloaded": all(
            torch.equal(reloaded_optim["state"][k]["exp_avg"], v["exp_avg"])
            for k, v in optim_state["state"].items()
        ),
    }


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("strategy")
    run_world(_distributed_scenario, out)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.distributed
def test_ddp_strategy_sums_over_processes_and_wraps_in_ddp(two_processes):
    for rank, report in enumerate(two_processes):
        ddp = report["ddp"]
        assert (ddp["type"], ddp["wrapped"], ddp["unwrapped_is_model"]) == (
            "DDPStrategy",
            "DistributedDataParallel",
            True,
        )
        assert (ddp["world_size"], ddp["rank"]) == (2, rank)
        assert ddp["sum_int"] == 3 and ddp["sum_float"] == pytest.approx(1.5)
        assert ddp["sum_tensor"] == [1.0, 2.0]
        assert ddp["any_rank_one"] and not ddp["any_none"]  # one rank's signal stops both
        assert ddp["rng_states"] == 2  # one per rank: rng_state_<rank>.pt
        assert ddp["no_sync_kept_local_gradients"]


@pytest.mark.distributed
def test_fsdp_strategy_gathers_full_state_and_loads_it_back_into_shards(two_processes):
    for report in two_processes:
        fsdp = report["fsdp"]
        assert (fsdp["type"], fsdp["wrapped"]) == ("FSDPStrategy", "FullyShardedDataParallel")
        assert fsdp["wrapped_once"] and fsdp["unwrapped_is_model"]
        assert fsdp["full_keys_match"] and fsdp["full_shapes_match"] and fsdp["trained"]
        assert fsdp["optimizer_state_keys"] == fsdp["parameter_names"]  # keyed like a single process's
        assert fsdp["loaded_into_shards"] and fsdp["optimizer_reloaded"]


def test_strategy_classes_extend_one_another():
    # The trainer holds one DistributionStrategy; DDP and FSDP only override what differs.
    assert issubclass(DDPStrategy, DistributionStrategy) and issubclass(FSDPStrategy, DDPStrategy)
