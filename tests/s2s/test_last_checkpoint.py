"""get_last_checkpoint: Hugging Face's answer for s2s checkpoints, broken ones skipped, and Hugging Face's own
checkpoints recognised with a way to use them."""

import logging

import pytest
import torch

from s2s.checkpointing import MANIFEST_NAME, CheckpointError, save_checkpoint
from s2s.last_checkpoint import get_last_checkpoint, is_hf_checkpoint, refuse_hf_checkpoint


def s2s_checkpoint(output_dir, step):
    return save_checkpoint(output_dir / f"checkpoint-{step}", model=torch.nn.Linear(2, 2))


def hf_checkpoint(output_dir, step, *, marker="training_args.bin"):
    """The files Hugging Face's Trainer writes into checkpoint-<step> (contents do not matter here)."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in (
        "config.json",
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "trainer_state.json",
        marker,
    ):
        (folder / name).write_bytes(b"{}")
    return folder


def test_none_without_checkpoints_and_a_clear_error_without_the_folder(tmp_path):
    (tmp_path / "checkpoint-notes").mkdir()  # not checkpoint-<number>
    (tmp_path / "checkpoint-7").write_text("a file, not a folder")
    assert get_last_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="output_dir"):
        get_last_checkpoint(tmp_path / "missing")


def test_highest_step_wins_numerically_as_a_string(tmp_path):
    for step in (2, 10, 9):
        s2s_checkpoint(tmp_path, step)
    found = get_last_checkpoint(tmp_path)
    assert found == str(tmp_path / "checkpoint-10") and isinstance(found, str)


def test_agrees_with_hugging_face_on_complete_checkpoints(tmp_path):
    trainer_utils = pytest.importorskip("transformers.trainer_utils")
    for step in (3, 12):
        s2s_checkpoint(tmp_path, step)
    assert get_last_checkpoint(tmp_path) == trainer_utils.get_last_checkpoint(str(tmp_path))


def test_broken_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    s2s_checkpoint(tmp_path, 2)
    (s2s_checkpoint(tmp_path, 4) / MANIFEST_NAME).unlink()  # as if the save died before finishing
    with caplog.at_level(logging.WARNING):
        assert get_last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-4" in caplog.text


@pytest.mark.parametrize("marker", ["training_args.bin", "rng_state.pth", "rng_state_1.pth"])
def test_hugging_face_checkpoint_is_recognised(tmp_path, marker):
    assert is_hf_checkpoint(hf_checkpoint(tmp_path, 5, marker=marker))
    assert not is_hf_checkpoint(s2s_checkpoint(tmp_path, 6))
    assert not is_hf_checkpoint(tmp_path / "checkpoint-404")


def test_hugging_face_checkpoint_is_returned_with_how_to_use_it(tmp_path, caplog):
    s2s_checkpoint(tmp_path, 2)
    hf = hf_checkpoint(tmp_path, 8)
    with caplog.at_level(logging.WARNING, logger="s2s.last_checkpoint"):
        assert get_last_checkpoint(tmp_path) == str(hf)
    assert "Hugging Face" in caplog.text and "from_pretrained" in caplog.text
    assert "--model_name_or_path" in caplog.text


def test_resuming_from_a_hugging_face_checkpoint_is_refused_with_the_way_out(tmp_path):
    refuse_hf_checkpoint(s2s_checkpoint(tmp_path, 2))  # ours: no error
    with pytest.raises(CheckpointError, match="cannot resume") as err:
        refuse_hf_checkpoint(hf_checkpoint(tmp_path, 3))
    assert "from_pretrained" in str(err.value) and "overwrite_output_dir" in str(err.value)
