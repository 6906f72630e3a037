"""A mid-buffer resume from the buffer's record (every line's lengths, saved with the position): the same
batches as the uninterrupted stream, only the examples of the batches still to come tokenized (and, with
ShardLines, parsed), across shard boundaries, blank, bad and too-long lines; a position saved without a record
still resumes; a changed tokenizer or shard is refused by name."""

import json

import numpy as np
import pytest

from samplers.streaming import ShardLines, StreamingTokenBatches
from samplers.streaming.buffer_record import NOT_AN_EXAMPLE, decode_buffer, encode_buffer, line_layout
from tests.samplers.test_streaming import PER_SHARD, ids, parser, tokenize, write_corpus


class Counting:
    """A per-example tokenizer that counts the examples it tokenized."""

    def __init__(self, scale: int = 1) -> None:
        self.count, self.scale = 0, scale

    def __call__(self, example):
        self.count += 1
        return {k: v * self.scale for k, v in tokenize(example).items()}


class CountingParse:
    """The JSON Lines parser, counting the lines it parsed."""

    def __init__(self) -> None:
        self.count, self.parse = 0, parser("jsonl")

    def __call__(self, line):
        self.count += 1
        return self.parse(line)


def make(paths, *, tokenizer=tokenize, parse=None, skip_bad_lines=False, **options):
    settings = {"max_tokens": 120, "window_size": 100, "buffer_size": 300, "seed": 3} | options
    reader = ShardLines(parse or parser("jsonl"), skip_bad_lines=skip_bad_lines)
    return StreamingTokenBatches(paths, read_shard=reader, tokenize=tokenizer, **settings)


def state_after(stream, count):
    batches = iter(stream)
    for _ in range(count):
        next(batches)
    return json.loads(json.dumps(stream.state_dict()))


def test_the_record_round_trips_and_marks_lines_that_are_no_example():
    lengths = np.array([[3, 4], [NOT_AN_EXAMPLE] * 2, [0, 9], [65_534, 2]])
    segments, back = decode_buffer(encode_buffer([3, 1], lengths))
    assert segments == [3, 1] and (back == lengths).all()
    big = np.array([[70_000, 1], [NOT_AN_EXAMPLE] * 2])
    assert (
        encode_buffer([2], big)["dtype"] == "int32"
        and (decode_buffer(encode_buffer([2], big))[1] == big).all()
    )
    with pytest.raises(ValueError, match="buffer record is damaged"):
        decode_buffer({"segments": [1], "dtype": "uint16", "lengths": "not base64!"})
    # examples at lines 2 and 4 of shard 0 (read from line 1 on), then line 3 of shard 2; shard 1 had none
    segments, layout = line_layout(0, 1, [(0, 2), (0, 4), (2, 3)], np.array([[1, 2], [3, 4], [5, 6]]))
    assert segments == [3, 0, 3]
    assert layout.tolist() == [[1, 2], [-1, -1], [3, 4], [-1, -1], [-1, -1], [5, 6]]


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_mid_buffer_resume_tokenizes_only_the_batches_to_come(tmp_path, prefetch):
    paths = write_corpus(tmp_path, "jsonl", shards=3)
    whole = list(make(paths))
    # buffers of 300 examples over shards of 170: the second (last) buffer starts in shard 1, ends in shard 2
    interrupted = make(paths)
    state = state_after(interrupted, 0)
    batches = iter(interrupted)
    count = 0
    while state["buffer"] < 1 or state["batches"] < 3:
        next(batches)
        count += 1
        state = interrupted.state_dict()
    state = json.loads(json.dumps(state))
    assert state["record"]["segments"] == [170 - 130, 170]  # 130 lines of shard 1 went to the first buffer
    tokenizer, parse = Counting(), CountingParse()
    resumed = make(paths, tokenizer=tokenizer, parse=parse, prefetch=prefetch)
    resumed.load_state_dict(state)
    rest = iter(resumed)
    assert ids([next(rest)]) == ids(whole[count : count + 1])
    assert tokenizer.count == len(whole[count]) and parse.count == len(whole[count])  # one batch's examples
    assert ids(rest) == ids(whole[count + 1 :])
    assert tokenizer.count == 3 * PER_SHARD - 300 - sum(len(b) for b in whole[count - 3 : count])


def test_blank_bad_and_too_long_lines_inside_the_buffer_keep_the_resume_exact(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=2)
    lines = paths[0].read_text().splitlines(keepends=True)
    lines[10] = "\n"  # a blank line: no example
    lines[20] = '{"translation": {"de": "a"\n'  # a bad line, skipped on request
    lines[30] = json.dumps({"translation": {"de": "s_long " + "w " * 200, "en": "t_long"}}) + "\n"
    paths[0].write_text("".join(lines))
    options = {"skip_bad_lines": True, "skip_too_long": True, "buffer_size": 340, "window_size": 340}
    whole = list(make(paths, **options))
    assert "s_long" not in sum(ids(whole), [])
    for count in (1, len(whole) // 2, len(whole) - 1):
        state = state_after(make(paths, **options), count)
        resumed = make(paths, **options)
        resumed.load_state_dict(state)
        assert ids(resumed) == ids(whole[count:]), f"after {count} batches"
        assert resumed.num_skipped == 1  # the too-long line is in the resumed buffer (one buffer per epoch)


def test_a_position_saved_without_a_record_resumes_by_tokenizing_the_buffer_again(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=2)
    whole = list(make(paths))
    state = state_after(make(paths), 5)
    del state["record"]  # as saved before records were kept
    tokenizer = Counting()
    resumed = make(paths, tokenizer=tokenizer)
    resumed.load_state_dict(state)
    assert ids(resumed) == ids(whole[5:])
    assert tokenizer.count == 2 * PER_SHARD  # both buffers, whole


def test_a_changed_tokenizer_or_shard_is_refused_by_name(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=2)
    state = state_after(make(paths), 5)
    resumed = make(paths, tokenizer=Counting(scale=2))
    resumed.load_state_dict(state)
    with pytest.raises(
        ValueError, match=r"lengths are \(\d+, \d+\) but the saved position recorded .* tokenizer"
    ):
        next(iter(resumed))
    shard = make(paths).rank_shards()[state["shard"]]
    shard.write_text("".join(shard.read_text().splitlines(keepends=True)[:50]))
    resumed = make(paths)
    resumed.load_state_dict(state)
    with pytest.raises(ValueError, match="fewer lines than the saved buffer read.*shards changed"):
        next(iter(resumed))


def test_the_record_is_the_same_object_in_every_state_of_a_buffer(tmp_path):
    """state_dict() runs once per micro-batch: the record is built once per buffer, not per call."""
    paths = write_corpus(tmp_path, "jsonl", shards=2)
    stream = make(paths, prefetch=False)
    batches = iter(stream)
    next(batches)
    first = stream.state_dict()["record"]
    next(batches)
    assert stream.state_dict()["record"]["lengths"] is first["lengths"]


def test_the_buffer_packs_id_lists_but_hands_out_what_the_tokenizer_gave(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=2)

    def with_extras(example):
        ids = [len(word) for word in example["source"].split()]
        return {"input_ids": ids, "labels": ids[::-1], "flags": [True, False], "weights": [0.5], "text": "x"}

    batches = list(make(paths, tokenizer=with_extras))
    example = batches[0][0]
    assert type(example["input_ids"]) is list and all(type(v) is int for v in example["input_ids"])
    assert example["flags"] == [True, False] and type(example["flags"][0]) is bool
    assert example["weights"] == [0.5] and example["text"] == "x"
    resumed = make(paths, tokenizer=with_extras)
    resumed.load_state_dict(state_after(make(paths, tokenizer=with_extras), 4))
    assert list(resumed) == batches[4:]


def test_windows_that_make_few_batches_are_told_once_with_a_larger_size(tmp_path, caplog):
    paths = write_corpus(tmp_path, "jsonl", shards=2)
    with caplog.at_level("INFO", logger="samplers.streaming.dataset"):
        list(make(paths, window_size=100, buffer_size=300))
    hints = [r.getMessage() for r in caplog.records if "larger windows pad less" in r.getMessage()]
    assert len(hints) == 1 and "windows of 100 examples make" in hints[0] and "max_tokens=120" in hints[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="samplers.streaming.dataset"):
        list(make(paths, max_sentences=1, window_size=300, buffer_size=300))
    assert "larger windows pad less" not in caplog.text  # one example a batch: 300 batches a window
