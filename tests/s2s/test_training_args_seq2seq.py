import json

import pytest

from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

# written by another engineer at the same time; skip rather than fail while it is absent
GenerationConfig = pytest.importorskip("s2s.generation").GenerationConfig


def make(**kwargs) -> Seq2SeqTrainingArguments:
    return Seq2SeqTrainingArguments(output_dir="out", **kwargs)


def test_inherits_training_arguments_validation():
    with pytest.raises(ValueError, match="push_to_hub"):
        make(push_to_hub=True)
    assert make(evaluation_strategy="epoch").eval_strategy == "epoch"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sortish_sampler": True, "group_by_length": True}, "keep one of them"),
        ({"sortish_sampler": True, "max_tokens_per_batch": 2048}, "keep one of them"),
        ({"generation_num_beams": 0}, "generation_num_beams must be an integer >= 1"),
        ({"generation_max_length": 0}, "generation_max_length must be an integer >= 1"),
        ({"generation_max_length": 1.5}, "generation_max_length must be an integer >= 1"),
        ({"generation_config": "/no/such/dir"}, "no such file or folder"),
        ({"generation_config": "{broken"}, "not valid JSON"),
        ({"generation_config": 42}, "must be a GenerationConfig, a dict"),
        ({"generation_config": {"num_beam": 4}}, "num_beam"),  # unknown key, caught by GenerationConfig
        ({"generation_config": {"num_beams": 0}}, "num_beams"),  # invalid value, caught at construction
    ],
)
def test_seq2seq_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_generation_config_from_dict_json_object_and_path(tmp_path):
    assert make().resolve_generation_config() is None
    from_dict = make(generation_config={"num_beams": 3, "max_length": 20}).resolve_generation_config()
    assert (from_dict.num_beams, from_dict.max_length) == (3, 20)
    from_json = make(generation_config='{"num_beams": 2}')
    assert from_json.generation_config == {"num_beams": 2}
    GenerationConfig(num_beams=5).save_pretrained(tmp_path)
    assert make(generation_config=str(tmp_path)).resolve_generation_config().num_beams == 5
    assert (
        make(generation_config=str(tmp_path / "generation_config.json")).resolve_generation_config().num_beams
        == 5
    )


def test_generation_config_object_serialises_as_dict():
    args = make(
        generation_config=GenerationConfig(num_beams=4), sortish_sampler=True, predict_with_generate=True
    )
    assert args.resolve_generation_config().num_beams == 4
    d = json.loads(args.to_json_string())
    assert d["generation_config"]["num_beams"] == 4
    assert d["sortish_sampler"] is True and d["predict_with_generate"] is True
    assert isinstance(args.to_sanitized_dict()["generation_config"], str)
