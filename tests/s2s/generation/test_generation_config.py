"""GenerationConfig: validation with helpful messages, JSON round trip, update/copy semantics."""

from __future__ import annotations

import json

import pytest

from s2s.generation import GenerationConfig


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences (3) > num_beams (2)"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0"),
        ({"num_return_sequences": 2}, "greedy"),
        ({"do_sample": True, "num_beams": 4}, "beam sampling"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"min_new_tokens": 5, "max_new_tokens": 3}, "min_new_tokens (5) > max_new_tokens (3)"),
        ({"min_length": 9, "max_length": 3}, "min_length (9) > max_length (3)"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"num_beams": 0}, "num_beams must be >= 1"),
        ({"num_beams": 2.0}, "num_beams must be an int"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"bad_words_ids": [[]]}, "bad_words_ids"),
        ({"bad_words_ids": [5]}, "bad_words_ids"),
        ({"eos_token_id": []}, "eos_token_id"),
        ({"max_length_a": 1.2}, "max_length_b"),
        ({"output_scores": True}, "return_dict_in_generate"),
        ({"do_sample": "yes"}, "do_sample must be True or False"),
    ],
)
def test_bad_values_raise_naming_the_field(options, fragment):
    with pytest.raises(ValueError) as err:
        GenerationConfig(**options)
    assert fragment in str(err.value)


def test_unknown_key_suggests_the_close_name():
    with pytest.raises(ValueError, match="'num_beam' \\(did you mean 'num_beams'\\?\\)"):
        GenerationConfig(num_beam=4)


def test_validate_catches_later_mutation():
    config = GenerationConfig(num_beams=4, num_return_sequences=2)
    config.num_beams = 1
    with pytest.raises(ValueError, match="greedy"):
        config.validate()


def test_save_and_load_round_trip(tmp_path):
    config = GenerationConfig(
        num_beams=5,
        max_length_a=1.2,
        max_length_b=10,
        bad_words_ids=[[7], [8, 9]],
        eos_token_id=[3, 4],
        early_stopping="never",
    )
    path = config.save_pretrained(tmp_path)
    assert path.name == "generation_config.json"
    assert GenerationConfig.from_pretrained(tmp_path) == config
    assert GenerationConfig.from_pretrained(path) == config
    assert GenerationConfig.from_pretrained(tmp_path, num_beams=2).num_beams == 2


def test_load_ignores_hugging_face_metadata_and_names_the_file_on_errors(tmp_path):
    file = tmp_path / "gen.json"
    file.write_text(
        json.dumps({"num_beams": 3, "transformers_version": "4.57.6", "_from_model_config": True})
    )
    assert GenerationConfig.from_pretrained(file).num_beams == 3
    file.write_text(json.dumps({"num_beams": 3, "beam_size": 3}))
    with pytest.raises(ValueError, match="gen.json: unknown generation option"):
        GenerationConfig.from_pretrained(file)
    file.write_text('{"num_beams": 3,\n oops}')
    with pytest.raises(ValueError, match="gen.json: invalid JSON at line 2"):
        GenerationConfig.from_pretrained(file)
    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path / "missing")


def test_update_returns_unused_and_is_atomic():
    config = GenerationConfig(num_beams=4)
    unused = config.update(num_beams=6, max_new_tokens=12, foo=1)
    assert unused == {"foo": 1}
    assert (config.num_beams, config.max_new_tokens) == (6, 12)
    with pytest.raises(ValueError, match="top_p"):
        config.update(num_beams=2, top_p=2.0)
    assert config.num_beams == 6  # nothing changed by the failed update


def test_copy_is_independent():
    config = GenerationConfig(bad_words_ids=[[5]])
    clone = config.copy()
    clone.bad_words_ids[0].append(6)
    clone.num_beams = 3
    assert config.bad_words_ids == [[5]] and config.num_beams == 1
    assert config.to_dict()["bad_words_ids"] == [[5]]
