import gzip
import json
import logging
from pathlib import Path

import datasets
import pytest

from recipes.text_files import DataFileError, detect_format, load_text_pairs, parallel_files
from tests.paths import REPO

TRANSLATION = {"source_field": "translation.de", "target_field": "translation.en"}
PAIRS = [("Ein Hund.", "A dog."), ("Zwei Katzen.", "Two cats."), ("Ein Haus.", "A house.")]


def write_jsonl(path: Path, records: list, *, compress: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    if compress:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def translation_records(pairs=PAIRS) -> list[dict]:
    return [{"translation": {"de": de, "en": en}} for de, en in pairs]


@pytest.fixture
def load(tmp_path):
    """load_text_pairs with a per-test cache, so tests never touch the user's datasets cache."""

    def _load(data, **kwargs):
        return load_text_pairs(data, cache_dir=tmp_path / "cache", **kwargs)

    return _load


def assert_names(
    exc: pytest.ExceptionInfo, path: Path, *, line: int | None, field: str | None, word: str = "line"
):
    message = str(exc.value)
    assert path.name in message
    if line is not None:
        assert f"{word} {line}" in message
        assert exc.value.line == line
    if field is not None:
        assert repr(field) in message
        assert exc.value.field == field
    assert "Fix:" in message


# ----------------------------------------------------------------------------------------------------------------
# the formats load the same pairs


@pytest.mark.parametrize("compress", [False, True])
def test_jsonl_nested_fields(load, tmp_path, compress):
    name = "train.jsonl.gz" if compress else "train.jsonl"
    ds = load(write_jsonl(tmp_path / name, translation_records(), compress=compress), **TRANSLATION)
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["source", "target"]
    assert list(zip(ds["source"], ds["target"])) == PAIRS


def test_jsonl_any_two_flat_fields_and_custom_columns(load, tmp_path):
    records = [{"id": i, "document": d, "summary": s} for i, (d, s) in enumerate(PAIRS)]
    ds = load(
        write_jsonl(tmp_path / "d.jsonl", records),
        source_field="document",
        target_field="summary",
        source_column="document",
        target_column="summary",
    )
    assert ds.column_names == ["document", "summary"]
    assert ds["summary"] == [s for _, s in PAIRS]


def test_unrelated_fields_may_change_type(load, tmp_path):
    # pyarrow's JSON reader refuses this file; only the two named fields matter here.
    records = [{"id": 1, "document": "a b", "summary": "a"}, {"id": "x", "document": "c d", "summary": "c"}]
    ds = load(write_jsonl(tmp_path / "d.jsonl", records), source_field="document", target_field="summary")
    assert ds["source"] == ["a b", "c d"]


def test_csv_with_quoted_delimiter_and_newline(load, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('document,summary\n"Hi, Tom.\nHow are you?",greeting\nplain,text\n', encoding="utf-8")
    ds = load(path, source_field="document", target_field="summary")
    assert ds["source"] == ["Hi, Tom.\nHow are you?", "plain"]
    assert ds["target"] == ["greeting", "text"]


def test_tsv_keeps_quotes_literally(load, tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('de\ten\n"Hallo" sagte er.\t"Hello" he said.\n', encoding="utf-8")
    ds = load(path, source_field="de", target_field="en")
    assert ds[0] == {"source": '"Hallo" sagte er.', "target": '"Hello" he said.'}


@pytest.mark.parametrize("spelling", ["prefix", "source_file", "tuple"])
def test_parallel_text_files(load, tmp_path, spelling):
    (tmp_path / "train.de").write_text("".join(de + "\n" for de, _ in PAIRS), encoding="utf-8")
    (tmp_path / "train.en.gz").write_bytes(gzip.compress("".join(en + "\r\n" for _, en in PAIRS).encode()))
    data = {
        "prefix": tmp_path / "train",
        "source_file": tmp_path / "train.de",
        "tuple": (tmp_path / "train.de", tmp_path / "train.en.gz"),
    }[spelling]
    ds = load(data, source_field="de", target_field="en")
    assert list(zip(ds["source"], ds["target"])) == PAIRS


def test_saved_dataset_and_dataset_dict(load, tmp_path):
    flat = datasets.Dataset.from_dict({"document": ["a b", "c d"], "summary": ["a", "c"]})
    flat.save_to_disk(str(tmp_path / "flat"))
    ds = load(tmp_path / "flat", source_field="document", target_field="summary")
    assert ds.column_names == ["source", "target"] and ds["target"] == ["a", "c"]

    nested = datasets.Dataset.from_list(translation_records())
    datasets.DatasetDict({"train": nested, "test": nested.select([0])}).save_to_disk(str(tmp_path / "dict"))
    ds = load(tmp_path / "dict", split="test", **TRANSLATION)
    assert list(zip(ds["source"], ds["target"])) == PAIRS[:1]
    with pytest.raises(DataFileError, match=r"splits \['test', 'train'\]"):
        load(tmp_path / "dict", **TRANSLATION)


def test_max_samples_keeps_the_first_and_stops_reading(load, tmp_path):
    records = translation_records() + ["{broken"]  # never reached
    ds = load(write_jsonl(tmp_path / "d.jsonl", records), max_samples=2, **TRANSLATION)
    assert ds["source"] == [de for de, _ in PAIRS[:2]]
    with pytest.raises(ValueError, match="max_samples"):
        load(tmp_path / "d.jsonl", max_samples=0, **TRANSLATION)


def test_same_content_same_fingerprint_edited_content_new_one(load, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", translation_records())
    first, again = load(path, **TRANSLATION), load(path, **TRANSLATION)
    assert first._fingerprint == again._fingerprint
    write_jsonl(path, translation_records(PAIRS[:2]))  # same path, new content: no stale cache
    edited = load(path, **TRANSLATION)
    assert edited._fingerprint != first._fingerprint and len(edited) == 2


def test_detect_format_and_parallel_files(tmp_path):
    assert detect_format("x/train.jsonl.gz") == "json"
    assert detect_format("x/train.TSV") == "tsv"
    assert detect_format("x/train.de") == "text"
    assert detect_format(tmp_path) == "saved"
    (tmp_path / "a.de").write_text("x\n")
    assert parallel_files(tmp_path / "a", "de", "en") is None
    (tmp_path / "a.en.gz").write_bytes(gzip.compress(b"y\n"))
    assert parallel_files(tmp_path / "a.en.gz", "de", "en") == (tmp_path / "a.de", tmp_path / "a.en.gz")


# ----------------------------------------------------------------------------------------------------------------
# bad input: each error names the file, the line and the field, and says how to fix it


def test_malformed_json_line(load, tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl", [*translation_records(), '{"translation": {"de": "x", "en": }']
    )
    with pytest.raises(DataFileError, match="malformed JSON") as exc:
        load(path, **TRANSLATION)
    assert_names(exc, path, line=4, field=None)


def test_line_that_is_not_an_object(load, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [translation_records()[0], '["a", "b"]'])
    with pytest.raises(DataFileError, match="expected a JSON object") as exc:
        load(path, **TRANSLATION)
    assert_names(exc, path, line=2, field=None)


def test_json_array_file_is_told_to_use_json_lines(load, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(translation_records(), indent=1))
    with pytest.raises(DataFileError, match="JSON array, not JSON Lines") as exc:
        load(path, **TRANSLATION)
    assert "jq -c" in str(exc.value)


def test_missing_field_lists_the_fields_the_line_has(load, tmp_path):
    records = translation_records()
    records[1] = {"translation": {"de": "Zwei Katzen.", "fr": "Deux chats."}}
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataFileError, match="missing field") as exc:
        load(path, **TRANSLATION)
    assert_names(exc, path, line=2, field="translation.en")
    assert "translation.fr" in str(exc.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, "is an int"), (["A", "dog"], "is a list"), (None, "is null"), ({"text": "A dog."}, "is an object")],
)
def test_wrong_type_where_a_string_is_expected(load, tmp_path, value, expected):
    records = translation_records()
    records[2]["translation"]["en"] = value
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataFileError, match=expected) as exc:
        load(path, **TRANSLATION)
    assert_names(exc, path, line=3, field="translation.en")


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_target_is_an_error(load, tmp_path, text):
    path = write_jsonl(tmp_path / "bad.jsonl", translation_records([*PAIRS[:2], ("Ein Haus.", text)]))
    with pytest.raises(DataFileError, match="is empty") as exc:
        load(path, **TRANSLATION)
    assert_names(exc, path, line=3, field="translation.en")
    assert "drop_empty" in str(exc.value)


def test_empty_examples_dropped_and_counted_when_asked(load, tmp_path, caplog):
    pairs = [("", "A dog."), *PAIRS, ("Ein Baum.", " ")]
    path = write_jsonl(tmp_path / "d.jsonl", translation_records(pairs))
    with caplog.at_level(logging.WARNING, logger="recipes.text_files"):
        ds = load(path, drop_empty=True, **TRANSLATION)
    assert list(zip(ds["source"], ds["target"])) == PAIRS
    assert "dropped 2 example(s)" in caplog.text and "lines 1, 5" in caplog.text


def test_all_examples_dropped_is_an_empty_dataset_error(load, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", translation_records([("", "x"), ("y", "")]))
    with pytest.raises(DataFileError, match="no examples left after dropping 2"):
        load(path, drop_empty=True, **TRANSLATION)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.jsonl.gz", "empty.csv"])
def test_empty_file(load, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"\n" if name.endswith("jsonl") else b"")
    with pytest.raises(DataFileError, match="empty|no examples") as exc:
        load(path, source_field="a", target_field="b")
    assert path.name in str(exc.value)


def test_undecodable_bytes_name_line_and_byte(load, tmp_path):
    path = tmp_path / "latin1.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in translation_records()]
    latin1 = '{"translation": {"de": "Gr\xfc\xdfe", "en": "Hi"}}\n'.encode("latin-1")
    path.write_bytes(("\n".join(lines[:2]) + "\n").encode() + latin1)
    with pytest.raises(DataFileError, match="not valid UTF-8") as exc:
        load(path, **TRANSLATION)
    assert_names(exc, path, line=3, field=None)
    assert "0xfc" in str(exc.value) and "iconv" in str(exc.value)


def test_corrupt_gzip(load, tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": "x", "b": "y"}\n' * 50)[:40])
    with pytest.raises(DataFileError, match="gzip stream is corrupt or truncated") as exc:
        load(path, source_field="a", target_field="b")
    assert path.name in str(exc.value)


def test_parallel_files_with_different_line_counts(load, tmp_path):
    (tmp_path / "train.de").write_text("a\nb\nc\n")
    (tmp_path / "train.en").write_text("x\ny\n")
    with pytest.raises(DataFileError, match="has 2 lines but .*train.de has 3") as exc:
        load(tmp_path / "train", source_field="de", target_field="en")
    assert "train.en" in str(exc.value) and "Fix:" in str(exc.value)


def test_parallel_empty_line_names_the_file_of_that_side(load, tmp_path):
    (tmp_path / "train.de").write_text("a\nb\n")
    (tmp_path / "train.en").write_text("x\n\n")
    with pytest.raises(DataFileError, match="is empty") as exc:
        load(tmp_path / "train", source_field="de", target_field="en")
    assert_names(exc, tmp_path / "train.en", line=2, field="en")


def test_csv_missing_column_and_ragged_row(load, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("document,summ\nx,y\n")
    with pytest.raises(DataFileError, match="missing column") as exc:
        load(path, source_field="document", target_field="summary")
    assert_names(exc, path, line=1, field="summary")
    assert "document, summ" in str(exc.value)

    path.write_text("document,summary\nx,y\nHi, Tom,greeting\n")
    with pytest.raises(DataFileError, match="3 fields but the header has 2") as exc:
        load(path, source_field="document", target_field="summary")
    assert_names(exc, path, line=3, field=None)


def test_tsv_empty_field(load, tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("de\ten\nHallo\tHello\nTschüss\t\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="is empty") as exc:
        load(path, source_field="de", target_field="en")
    assert_names(exc, path, line=3, field="en")


def test_missing_file_unknown_suffix_and_plain_directory(load, tmp_path):
    with pytest.raises(DataFileError, match="no such file") as exc:
        load(tmp_path / "nope.jsonl", **TRANSLATION)
    assert "nope.jsonl" in str(exc.value)
    with pytest.raises(DataFileError, match="no parallel files"):
        load(tmp_path / "train", source_field="de", target_field="en")
    (tmp_path / "notes.txt").write_text("a\n")
    with pytest.raises(DataFileError, match="cannot tell the format"):
        load(tmp_path / "notes.txt", source_field="de", target_field="en")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataFileError, match="not a dataset saved with `save_to_disk`"):
        load(tmp_path / "folder", source_field="de", target_field="en")


def test_saved_dataset_bad_column_type_and_empty_row(load, tmp_path):
    datasets.Dataset.from_dict({"document": ["a", "b"], "summary": [1, 2]}).save_to_disk(
        str(tmp_path / "ints")
    )
    with pytest.raises(DataFileError, match="not strings") as exc:
        load(tmp_path / "ints", source_field="document", target_field="summary")
    assert_names(exc, tmp_path / "ints", line=None, field="summary")

    datasets.Dataset.from_dict({"document": ["a", "b", "c"], "summary": ["x", "", "z"]}).save_to_disk(
        str(tmp_path / "gap")
    )
    with pytest.raises(DataFileError, match="empty or missing") as exc:
        load(tmp_path / "gap", source_field="document", target_field="summary")
    assert_names(exc, tmp_path / "gap", line=1, field="summary", word="row")
    ds = load(tmp_path / "gap", source_field="document", target_field="summary", drop_empty=True)
    assert ds["source"] == ["a", "c"]


def test_bundled_multi30k_loads(load):
    root = REPO / "recipes" / "data" / "multi30k"
    ds = load(root / "test.jsonl.gz", **TRANSLATION)
    assert len(ds) == 1000
    assert all(isinstance(s, str) and s.strip() for s in ds["target"][:50])


@pytest.mark.parametrize("row", ['"unclosed,x\nmore,stuff\n', '"a"b,x\n'])
def test_csv_broken_quoting_names_the_line_where_the_row_starts(load, tmp_path, row):
    path = tmp_path / "q.csv"
    path.write_text("document,summary\nok,fine\n" + row)
    with pytest.raises(DataFileError, match="malformed CSV row") as exc:
        load(path, source_field="document", target_field="summary")
    assert_names(exc, path, line=3, field=None)


def test_each_line_format_has_its_reader_in_the_table(load, tmp_path):
    """The loader picks the reader from the READERS table by format; a new format is one entry there."""
    from recipes.text_files import READERS

    assert set(READERS) == {"json", "csv", "tsv", "text"}
    (tmp_path / "train.tsv").write_text("de\ten\nEin Hund.\tA dog.\n", encoding="utf-8")
    rows = list(READERS["tsv"]((tmp_path / "train.tsv",) * 2, ("de", "en")))
    assert rows == [(2, "Ein Hund.", "A dog.")]
    assert load(tmp_path / "train.tsv", source_field="de", target_field="en")["source"] == ["Ein Hund."]
