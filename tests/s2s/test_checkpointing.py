"""Checkpoints: complete round trips, atomic writes, clear failures, and nothing that executes code."""

import errno
import json
import logging
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file, save_model
from torch import nn

from s2s import atomic_folder
from s2s import checkpointing as ckpt
from s2s.checkpointing import (
    CheckpointError,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    rotate_checkpoints,
    safe_join,
    save_checkpoint,
    save_model_weights,
    verify_checkpoint,
)


class TiedLM(nn.Module):
    """Embedding tied to the output layer, as seq2seq models do: the shared tensor must be stored once."""

    def __init__(self, vocab: int = 11, d_model: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.norm(torch.tanh(self.proj(self.embed(ids)))))


class PretrainedLike(TiedLM):
    """Our own models' protocol: save_pretrained(dir) writes config.json and model.safetensors."""

    def save_pretrained(self, directory):
        Path(directory, "config.json").write_text(json.dumps({"vocab": 11, "d_model": 16}))
        save_model(self, str(Path(directory, "model.safetensors")))


def _trained(model: nn.Module, steps: int = 3):
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    for _ in range(steps):
        loss = model(torch.randint(0, 11, (4, 5))).square().mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return optimizer, scheduler


def _save(path: Path, model: nn.Module | None = None, **extra) -> Path:
    model = model or TiedLM()
    optimizer, scheduler = _trained(model)
    return save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        trainer_state={"global_step": 3, "log_history": [{"loss": 1.5}]},
        sampler_state={"epoch": 1, "consumed": 7},
        training_args={"output_dir": str(path.parent), "learning_rate": 0.01},
        **extra,
    )


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _hidden(output_dir: Path) -> list[str]:
    return [p.name for p in output_dir.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------- round trips


def test_round_trip_restores_weights_optimizer_scheduler_and_states(tmp_path):
    model = TiedLM()
    optimizer, scheduler = _trained(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    path = save_checkpoint(
        tmp_path / "checkpoint-3",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        trainer_state={"global_step": 3},
        sampler_state={"epoch": 0, "consumed": 12},
        training_args={"seed": 42},
    )
    fresh = TiedLM(d_model=16)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda step: 1 / (1 + step))
    fresh_scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    loaded = load_checkpoint(
        path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=fresh_scaler
    )

    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert fresh.head.weight is fresh.embed.weight  # tie survives
    for state_a, state_b in zip(optimizer.state.values(), fresh_opt.state.values()):
        torch.testing.assert_close(state_a["exp_avg"], state_b["exp_avg"], rtol=0, atol=0)
    assert fresh_sched.last_epoch == scheduler.last_epoch == 3
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert fresh_scaler.state_dict() == scaler.state_dict()
    assert loaded.path == path
    assert loaded.trainer_state == {"global_step": 3}
    assert loaded.sampler_state == {"epoch": 0, "consumed": 12}
    assert loaded.training_args == {"seed": 42}


def test_shared_tensor_is_stored_once(tmp_path):
    from safetensors import safe_open

    save_model_weights(TiedLM(), tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert len(keys & {"embed.weight", "head.weight"}) == 1


def test_rng_states_restored_and_loadable_with_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "checkpoint-1", model=TiedLM())
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    load_checkpoint(path)
    assert (random.random(), np.random.rand(3).tolist()) == expected[:2]
    torch.testing.assert_close(torch.rand(3), expected[2], rtol=0, atol=0)
    state = torch.load(path / "rng_state.pt", weights_only=True)  # no pickled numpy objects inside
    assert set(state) >= {"python", "numpy", "cpu"}


def test_restore_rng_false_leaves_generators_alone(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint-1", model=TiedLM())
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    load_checkpoint(path, restore_rng=False)
    torch.testing.assert_close(torch.rand(2), expected, rtol=0, atol=0)


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    path = _save(tmp_path / "checkpoint-3")
    manifest = json.loads((path / "manifest.json").read_text())
    on_disk = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert on_disk >= {
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pt",
        "sampler.json",
        "trainer_state.json",
        "training_args.json",
    }
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size
        assert entry["sha256"] == atomic_folder.file_sha256(path / name)


def test_save_pretrained_models_and_generation_config(tmp_path):
    class WithGenerationConfig(PretrainedLike):
        class generation_config:  # noqa: N801 (stands in for a GenerationConfig instance)
            @staticmethod
            def save_pretrained(directory):
                Path(directory, "generation_config.json").write_text('{"num_beams": 4}')

    model = WithGenerationConfig()
    path = save_checkpoint(tmp_path / "checkpoint-1", model=model)
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {p.name for p in path.iterdir()}
    fresh = PretrainedLike()
    load_model_weights(fresh, path)
    torch.testing.assert_close(fresh.proj.weight, model.proj.weight, rtol=0, atol=0)


def test_hugging_face_model_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=32,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(config)
    path = save_checkpoint(tmp_path / "checkpoint-1", model=model)
    assert not list(path.glob("*.bin"))  # safetensors only
    torch.manual_seed(1)
    fresh = transformers.BartForConditionalGeneration(config)
    load_model_weights(fresh, path)  # tied embeddings/lm_head saved once must not count as missing
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_compiled_and_data_parallel_models_are_unwrapped(tmp_path):
    model = TiedLM()
    for i, wrapped in enumerate(
        [torch.compile(model), nn.DataParallel(model), torch.compile(nn.DataParallel(model))]
    ):
        path = save_checkpoint(tmp_path / f"checkpoint-{i}", model=wrapped)
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), "pt") as handle:
            assert all(not k.startswith(("module.", "_orig_mod.")) for k in handle.keys())  # noqa: SIM118
        fresh = TiedLM()
        load_model_weights(torch.compile(fresh), path)
        torch.testing.assert_close(fresh.proj.weight, model.proj.weight, rtol=0, atol=0)


def test_ddp_model_is_unwrapped(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = TiedLM()
        path = save_checkpoint(tmp_path / "checkpoint-1", model=nn.parallel.DistributedDataParallel(model))
        fresh = TiedLM()
        load_model_weights(fresh, path)
        torch.testing.assert_close(fresh.proj.weight, model.proj.weight, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- atomicity


def test_resaving_a_step_replaces_it_and_leaves_nothing_behind(tmp_path):
    first = _save(tmp_path / "checkpoint-3")
    old_weights = (first / "model.safetensors").read_bytes()
    model = TiedLM(d_model=32)
    save_checkpoint(tmp_path / "checkpoint-3", model=model)
    verify_checkpoint(tmp_path / "checkpoint-3")
    assert (tmp_path / "checkpoint-3" / "model.safetensors").read_bytes() != old_weights
    assert not (tmp_path / "checkpoint-3" / "optimizer.pt").exists()  # the old folder's files are gone
    assert _hidden(tmp_path) == []


def test_failed_resave_between_renames_restores_the_old_checkpoint(tmp_path, monkeypatch):
    path = _save(tmp_path / "checkpoint-3")
    before = _tree(path)
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp-" in Path(src).name:  # the new folder cannot be renamed in: the old one is already aside
            raise OSError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_folder.os, "replace", replace)
    with pytest.raises(CheckpointError, match="permission denied"):
        save_checkpoint(path, model=TiedLM())
    assert _tree(path) == before
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "code", "hint"),
    [  # (module, name): the content writer's steps in ckpt, the atomic-folder protocol's in atomic_folder
        ((ckpt, "_write_json"), errno.ENOSPC, "disk is full"),
        ((ckpt, "_write_torch"), errno.ENOSPC, "disk is full"),
        ((atomic_folder, "write_manifest"), errno.ENOSPC, "disk is full"),
        ((atomic_folder, "fsync_file"), errno.EDQUOT, "quota"),
        ((ckpt, "save_model_weights"), errno.EACCES, "permission denied"),
    ],
)
def test_save_failure_raises_clear_error_and_keeps_previous_checkpoints(
    tmp_path, monkeypatch, target, code, hint
):
    previous = _save(tmp_path / "checkpoint-3")
    before = _tree(previous)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(*target, fail)
    with pytest.raises(CheckpointError) as info:
        _save(tmp_path / "checkpoint-6")
    message = str(info.value)
    assert "checkpoint-6" in message and hint in message and "Fix:" in message
    assert _tree(previous) == before
    assert list_checkpoints(tmp_path) == [previous]
    assert _hidden(tmp_path) == []
    assert find_latest_checkpoint(tmp_path) == previous


def test_permission_denied_creating_the_folder(tmp_path, monkeypatch):
    # Tests run as root, where chmod does not stop writes: simulate the refusal instead.
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(CheckpointError, match=r"checkpoint-1.*permission denied"):
        save_checkpoint(tmp_path / "out" / "checkpoint-1", model=TiedLM())


def test_interrupt_during_save_removes_the_temporary_folder(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_folder, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path / "checkpoint-3")
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_training_args_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"training_args.json.*object"):
        save_checkpoint(tmp_path / "checkpoint-1", model=TiedLM(), training_args={"callback": object()})
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_saves_are_ignored_then_cleaned(tmp_path, caplog):
    good = _save(tmp_path / "checkpoint-3")
    pid = _dead_pid()
    moved_aside = tmp_path / f".checkpoint-9.old-{pid}"  # killed between the two renames of a re-save
    save_checkpoint(moved_aside, model=TiedLM())
    leftover = tmp_path / f".checkpoint-6.tmp-{pid}"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="s2s.checkpointing"):
        assert find_latest_checkpoint(tmp_path) == good
    assert leftover.name in caplog.text and moved_aside.name in caplog.text
    save_checkpoint(tmp_path / "checkpoint-12", model=TiedLM())
    assert not leftover.exists()
    assert (tmp_path / "checkpoint-9").is_dir()  # put back, not deleted
    verify_checkpoint(tmp_path / "checkpoint-9")


# ------------------------------------------------------------------------------------------- verification


def test_find_latest_skips_incomplete_and_corrupt_checkpoints_and_says_why(tmp_path, caplog):
    _save(tmp_path / "checkpoint-2")
    good = _save(tmp_path / "checkpoint-10")
    no_manifest = _save(tmp_path / "checkpoint-11")
    (no_manifest / "manifest.json").unlink()
    corrupt = _save(tmp_path / "checkpoint-12")
    with open(corrupt / "optimizer.pt", "r+b") as f:
        f.seek(40)
        f.write(b"\x00\xff\x00")
    with caplog.at_level(logging.WARNING, logger="s2s.checkpointing"):
        assert find_latest_checkpoint(tmp_path) == good
    assert "skipping" in caplog.text
    assert "checkpoint-12" in caplog.text and "optimizer.pt" in caplog.text and "sha256" in caplog.text
    assert "checkpoint-11" in caplog.text and "no manifest.json" in caplog.text


def test_find_latest_is_none_without_checkpoints(tmp_path):
    assert find_latest_checkpoint(tmp_path / "missing") is None
    assert find_latest_checkpoint(tmp_path) is None


def test_list_checkpoints_sorts_by_step(tmp_path):
    for step in (10, 9, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-best").mkdir()
    (tmp_path / "checkpoint-7.txt").write_text("")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]


def test_verify_catches_truncation_and_bad_headers_without_hashing(tmp_path):
    path = _save(tmp_path / "checkpoint-3")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"checkpoint-3: model.safetensors has \d+ bytes.*truncated"):
        verify_checkpoint(path)
    weights.write_bytes(b"\xff" * len(data))  # same size, garbage header
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a valid safetensors file"):
        verify_checkpoint(path, hash_limit_bytes=0)


def test_verify_refuses_manifest_names_outside_the_folder(tmp_path):
    path = _save(tmp_path / "checkpoint-3")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../../etc/passwd"] = {"size": 1, "sha256": "0"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"unsafe file name.*\.\."):
        verify_checkpoint(path)


# ------------------------------------------------------------------------------------------- loading errors


def test_weights_from_another_model_name_the_tensor_and_both_shapes(tmp_path):
    save_model_weights(TiedLM(d_model=32), tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(TiedLM(d_model=16), tmp_path)
    message = str(info.value)
    assert "proj.weight: checkpoint (32, 32) vs model (16, 16)" in message
    assert "another model" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    save_file(
        {"embed.weight": torch.zeros(11, 16), "extra.bias": torch.zeros(3)},
        str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(
        CheckpointError, match=r"missing key\(s\): \['proj.weight'.*unexpected key\(s\): \['extra.bias'\]"
    ):
        load_model_weights(TiedLM(), tmp_path)


def test_missing_weights_and_pickled_weights_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"has no model.safetensors"):
        load_model_weights(TiedLM(), tmp_path)
    torch.save(TiedLM().state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*pickle.*execute code"):
        load_model_weights(TiedLM(), tmp_path)


def test_corrupt_weights_file_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a valid safetensors file"):
        load_model_weights(TiedLM(), tmp_path)


def test_optimizer_from_another_model_is_explained(tmp_path):
    path = _save(tmp_path / "checkpoint-3")
    other = nn.Linear(3, 3)
    with pytest.raises(CheckpointError, match=r"optimizer.pt does not fit this optimizer"):
        load_checkpoint(path, optimizer=torch.optim.AdamW(other.parameters()))


def test_missing_optimizer_state_is_explained(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint-1", model=TiedLM())
    model = TiedLM()
    with pytest.raises(CheckpointError, match=r"no optimizer.pt.*save_only_model"):
        load_checkpoint(path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


class Payload:
    """A pickled object whose unpickling would run code (here: create a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_objects_in_a_checkpoint_are_refused(tmp_path):
    path = _save(tmp_path / "checkpoint-3")
    marker = tmp_path / "code-was-executed"
    with open(path / "optimizer.pt", "wb") as f:
        torch.save({"state": {}, "param_groups": [], "evil": Payload(str(marker))}, f, pickle_module=pickle)
    atomic_folder.write_manifest(path)  # a consistent manifest: the attacker controls the whole folder
    model = TiedLM()
    with pytest.raises(
        CheckpointError, match=r"optimizer.pt was refused: it contains pickled Python objects"
    ):
        load_checkpoint(path, model=model, optimizer=torch.optim.AdamW(model.parameters()))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- rotation, paths


def _make_steps(output_dir: Path, steps) -> list[Path]:
    return [save_checkpoint(output_dir / f"checkpoint-{s}", model=TiedLM()) for s in steps]


def test_rotation_deletes_the_oldest_beyond_the_limit(tmp_path):
    paths = _make_steps(tmp_path, [1, 2, 3, 4, 5])
    assert rotate_checkpoints(tmp_path, save_total_limit=2) == paths[:3]
    assert list_checkpoints(tmp_path) == paths[3:]
    assert _hidden(tmp_path) == []
    assert rotate_checkpoints(tmp_path, save_total_limit=None) == []


def test_rotation_never_deletes_the_best_checkpoint(tmp_path):
    paths = _make_steps(tmp_path, [1, 2, 3, 4])
    assert rotate_checkpoints(tmp_path, save_total_limit=2, keep=paths[1]) == [paths[0], paths[2]]
    assert list_checkpoints(tmp_path) == [paths[1], paths[3]]
    # limit 1 with a best that is not the newest: both stay (the newest is needed to resume)
    assert rotate_checkpoints(tmp_path, save_total_limit=1, keep=str(paths[1])) == []
    assert rotate_checkpoints(tmp_path, save_total_limit=1) == [paths[1]]


def test_rotation_leaves_incomplete_folders_and_refuses_zero(tmp_path):
    paths = _make_steps(tmp_path, [1, 2, 3])
    (paths[0] / "manifest.json").unlink()
    assert rotate_checkpoints(tmp_path, save_total_limit=1) == [paths[1]]
    assert list_checkpoints(tmp_path) == [paths[0], paths[2]]
    with pytest.raises(ValueError, match="save_total_limit"):
        rotate_checkpoints(tmp_path, save_total_limit=0)


def test_safe_join_keeps_paths_inside_output_dir(tmp_path):
    assert safe_join(tmp_path, "runs/a") == tmp_path / "runs" / "a"
    for bad in ("/etc/passwd", "../x", "runs/../../x", ""):
        with pytest.raises(ValueError, match="path"):
            safe_join(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(ValueError, match="outside"):
        safe_join(tmp_path, "link/escape")


def test_average_model_weights_is_the_elementwise_mean_and_refuses_other_runs(tmp_path):
    weights = [
        {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "steps": torch.tensor([7])},
        {"w": torch.tensor([3.0, 5.0], dtype=torch.bfloat16), "steps": torch.tensor([7])},
        {"w": torch.tensor([5.0, 8.0], dtype=torch.bfloat16), "steps": torch.tensor([7])},
    ]
    dirs = []
    for i, state in enumerate(weights):
        (tmp_path / f"c{i}").mkdir()
        save_file(state, str(tmp_path / f"c{i}" / "model.safetensors"))
        dirs.append(tmp_path / f"c{i}")
    mean = ckpt.average_model_weights(dirs)
    assert mean["w"].dtype == torch.bfloat16 and mean["w"].tolist() == [3.0, 5.0]
    assert mean["steps"].tolist() == [7]

    (tmp_path / "other").mkdir()
    save_file(
        {"w": torch.zeros(3, dtype=torch.bfloat16), "steps": torch.tensor([7])},
        str(tmp_path / "other" / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match=r"other.*w is \(3,\)"):
        ckpt.average_model_weights([dirs[0], tmp_path / "other"])
    (tmp_path / "step8").mkdir()
    save_file(
        {"w": torch.zeros(2, dtype=torch.bfloat16), "steps": torch.tensor([8])},
        str(tmp_path / "step8" / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="non-float tensor steps differs"):
        ckpt.average_model_weights([dirs[0], tmp_path / "step8"])
