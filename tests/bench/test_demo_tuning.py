"""bench.demo_tuning's pieces that decide what a tuning run may read and what an averaged model holds: a run
never reads the test set, each variant's overrides come last (they win over the tuning defaults), and the
averaged folder loads as a model whose weights are the checkpoints' mean."""

from __future__ import annotations

import pytest
import torch

from bench.demo_tuning import (
    TUNING_OVERRIDES,
    VARIANTS,
    last_checkpoints,
    train_command,
    with_threads,
    write_averaged_model,
)
from recipes.arguments import parse_arguments
from s2s.models import TransformerConfig, TransformerForConditionalGeneration


@pytest.mark.parametrize("name", ["baseline", "linear_lr_3e-3", "linear_dropout_0.2"])
def test_tuning_runs_skip_the_test_set_and_keep_the_variants_settings(name, tmp_path):
    command = train_command(name, tmp_path)
    _, data_args, training_args = parse_arguments(command[3:])  # after `python -m recipes.translation`
    assert training_args.do_predict is False  # so recipes.data never loads test_file
    assert str(training_args.eval_strategy).endswith("no")
    assert data_args.max_eval_samples == 1014
    assert training_args.output_dir == str(tmp_path / name)
    overrides = list(VARIANTS[name])
    assert command[len(command) - len(overrides) :] == overrides  # last: a variant's value wins
    assert command.index(TUNING_OVERRIDES[0]) < len(command) - len(overrides)


def test_variant_overrides_reach_the_parsed_arguments(tmp_path):
    model_args, _, training_args = parse_arguments(train_command("linear_dropout_0.2", tmp_path)[3:])
    assert str(training_args.lr_scheduler_type).endswith("linear")
    assert model_args.model_overrides in ({"dropout": 0.2}, '{"dropout": 0.2}')


def test_the_thread_count_given_to_a_run_wins_over_the_configs(tmp_path):
    model_args, _, _ = parse_arguments(with_threads(train_command("baseline", tmp_path), 1)[3:])
    assert model_args.num_threads == 1  # the demo config pins 2


def test_an_unknown_variant_is_refused_with_the_known_names(tmp_path):
    with pytest.raises(SystemExit, match="unknown variant 'lr_9'.*baseline"):
        train_command("lr_9", tmp_path)


def test_averaged_model_is_the_mean_of_the_newest_checkpoints(tmp_path):
    config = TransformerConfig.preset("tiny", vocab_size=40)
    run = tmp_path / "run"
    models = {}
    for step in (100, 200, 300, 1000):
        torch.manual_seed(step)
        models[step] = TransformerForConditionalGeneration(config)
        models[step].save_pretrained(run / f"checkpoint-{step}")
    (run / "checkpoint-300" / "optimizer.pt").write_bytes(b"not a model file")

    chosen = last_checkpoints(run, 3)
    assert [path.name for path in chosen] == ["checkpoint-200", "checkpoint-300", "checkpoint-1000"]
    write_averaged_model(chosen, tmp_path / "averaged")

    assert not (tmp_path / "averaged" / "optimizer.pt").exists()
    loaded = TransformerForConditionalGeneration.from_pretrained(tmp_path / "averaged")
    for name, tensor in loaded.state_dict().items():
        expected = sum(models[step].state_dict()[name].double() for step in (200, 300, 1000)) / 3
        torch.testing.assert_close(tensor.double(), expected, rtol=0, atol=1e-6)


def test_averaging_more_checkpoints_than_the_run_kept_is_refused(tmp_path):
    (tmp_path / "checkpoint-100").mkdir()
    with pytest.raises(SystemExit, match="holds 1 checkpoints, fewer than the 3"):
        last_checkpoints(tmp_path, 3)
