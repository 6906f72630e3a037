"""Reviewer fixes: the recipes' check for an output_dir that already holds checkpoints counts only real
checkpoint-<step> folders (newest by step), and default_data_collator's error says that it pads nothing."""

import pytest

from recipes import arguments
from s2s.data_collator import default_data_collator


def check(output_dir, *extra):
    model_args, data_args, training_args = arguments.parse_arguments(
        ["--do_train", "--train_file", "train.jsonl", "--output_dir", str(output_dir), *extra]
    )
    arguments.check_arguments(model_args, data_args, training_args)


def test_folders_that_only_look_like_checkpoints_do_not_block_training(tmp_path):
    (tmp_path / "checkpoint-best").mkdir()  # e.g. a copy of the best model
    (tmp_path / "checkpoint-notes.txt").write_text("not a folder")
    check(tmp_path)  # nothing to resume: no error


def test_existing_checkpoints_are_named_newest_first_by_step(tmp_path):
    for step in (9, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    with pytest.raises(ValueError, match=r"checkpoint-10, \.\.\.\): pass --resume_from_checkpoint"):
        check(tmp_path)  # sorted as text, checkpoint-9 would come last
    check(tmp_path, "--resume_from_checkpoint", "true")
    check(tmp_path, "--overwrite_output_dir")


def test_default_collator_says_it_pads_nothing():
    with pytest.raises(ValueError) as info:
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [1]}])
    message = str(info.value)
    assert "'input_ids' holds sequences of different lengths" in message
    assert "pads nothing" in message and "DataCollatorForSeq2Seq" in message
    assert "are padded" not in message  # the old text listed 'input_ids' among the padded keys
