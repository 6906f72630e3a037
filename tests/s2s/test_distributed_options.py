"""FSDP and distributed options checked in one process (no process group needed): what gets wrapped, and
the combinations refused with a message that names the fix. The 2-process runs are in test_distributed.py."""

from __future__ import annotations

import pytest
import torch

from s2s import fsdp
from s2s.distributed import get_world_size
from s2s.evaluation import gather_in_dataset_order
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.models.layers import DecoderLayer, EncoderLayer
from s2s.strategy import DistributionStrategy
from s2s.trainer import Trainer
from s2s.training_args import TrainingArguments


def tiny_model() -> TransformerForConditionalGeneration:
    torch.manual_seed(0)
    config = TransformerConfig.preset(
        "tiny", vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2, ffn_dim=32
    )
    return TransformerForConditionalGeneration(config)


def args(tmp_path, **overrides) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **overrides)


def test_default_auto_wrap_is_one_unit_per_transformer_layer(tmp_path):
    assert fsdp.layer_classes(tiny_model(), None) == {EncoderLayer, DecoderLayer}
    assert fsdp.layer_classes(tiny_model(), "EncoderLayer") == {EncoderLayer}


def test_unknown_layer_class_names_the_models_classes():
    with pytest.raises(ValueError, match=r"\['EncoderBlock'\] are not module classes.*'EncoderLayer'"):
        fsdp.layer_classes(tiny_model(), "EncoderBlock, DecoderLayer")


def test_fsdp_settings_merge_arguments_and_refuse_unknown_keys(tmp_path):
    settings = fsdp.fsdp_settings(
        args(tmp_path, fsdp="full_shard offload", fsdp_config={"fsdp_backward_prefetch": "backward_post"})
    )
    assert settings == {"backward_prefetch": "backward_post", "offload_params": True}
    assert fsdp.fsdp_settings(args(tmp_path, fsdp="shard_grad_op", fsdp_min_num_params=100)) == {
        "min_num_params": 100
    }
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['xla'\]; the known keys are min_num_params"):
        fsdp.fsdp_settings(args(tmp_path, fsdp="full_shard", fsdp_config={"xla": True}))


def test_offload_on_cpu_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="remove 'offload' from fsdp"):
        fsdp.wrap_fsdp(tiny_model(), args(tmp_path, fsdp="full_shard offload"))


def test_trainer_refuses_fsdp_config_without_fsdp_and_clashing_flags(tmp_path):
    with pytest.raises(ValueError, match="fsdp_config is set but fsdp is empty"):
        Trainer(model=tiny_model(), args=args(tmp_path, fsdp_config={"forward_prefetch": True}))
    with pytest.raises(ValueError, match=r"cannot be combined with \['auto_find_batch_size'\]"):
        Trainer(model=tiny_model(), args=args(tmp_path, fsdp="full_shard", auto_find_batch_size=True))


def test_fsdp_in_one_process_warns_and_trains_unsharded(tmp_path, caplog):
    trainer = Trainer(model=tiny_model(), args=args(tmp_path, fsdp="full_shard"))
    assert "nothing to shard" in caplog.text
    assert get_world_size() == 1 and type(trainer.strategy) is DistributionStrategy
    assert trainer.strategy.wrap(trainer.model) is trainer.model


def test_gather_keeps_one_row_per_index_in_dataset_order():
    # one process: rows in longest-first order with a repeated index (a padded shard) come back once each
    index = torch.tensor([2, 0, 3, 1, 2]).numpy()
    preds = torch.tensor([[20], [0], [30], [10], [21]]).numpy()
    out_index, (out_preds,) = gather_in_dataset_order(index, (preds,), pad_values=(0,))
    assert out_index.tolist() == [0, 1, 2, 3]
    assert out_preds[:, 0].tolist() == [0, 10, 20, 30]
