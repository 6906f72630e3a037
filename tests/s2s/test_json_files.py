"""read_json_object: each way a hand-edited JSON file goes wrong is named with the file (and line)."""

from __future__ import annotations

import pytest

from s2s.json_files import read_json_object


def test_an_object_is_returned(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"d_model": 64}')
    assert read_json_object(path) == {"d_model": 64}


def test_a_missing_file_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        read_json_object(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="^pass a folder with config.json$"):
        read_json_object(tmp_path / "config.json", missing="pass a folder with config.json")


def test_invalid_json_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "d_model": 64,\n  "layers": }\n')
    with pytest.raises(ValueError, match=r"config.json: invalid JSON at line 3, column 13"):
        read_json_object(path)


def test_a_json_value_that_is_not_an_object_is_refused(tmp_path):
    path = tmp_path / "generation_config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object of options, got list"):
        read_json_object(path, what="a JSON object of options")
