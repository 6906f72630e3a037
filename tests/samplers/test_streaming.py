"""StreamingTokenBatches: deterministic per (seed, epoch), every example once across ranks, exact mid-epoch
resume without reading earlier shards, batches within the token budget."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from samplers.streaming import ShardLines, StreamingTokenBatches, jsonl_pair, parallel_text, tsv_pair
from samplers.streaming.buffer_batches import hilbert_index, sizes_in_order

NUM_SHARDS, PER_SHARD = 5, 170


def write_corpus(folder: Path, kind: str, *, shards: int = NUM_SHARDS, per_shard: int = PER_SHARD, seed=0):
    """Shards of ``per_shard`` pairs whose texts carry their id; lengths vary from 1 to 40 words."""
    rng = random.Random(seed)
    paths = []
    for k in range(shards):
        pairs = []
        for i in range(per_shard):
            words = rng.randint(1, 40)
            source = " ".join([f"s{k}_{i}"] + ["w"] * (words - 1))
            target = " ".join([f"t{k}_{i}"] + ["v"] * max(0, words + rng.randint(-3, 3) - 1))
            pairs.append((source, target))
        if kind == "text":
            files = (folder / f"shard{k}.de", folder / f"shard{k}.en")
            for path, side in zip(files, zip(*pairs, strict=True), strict=True):
                path.write_text("".join(f"{line}\n" for line in side), encoding="utf-8")
            paths.append(files)
            continue
        if kind == "tsv":
            text = "".join(f"{s}\t{t}\n" for s, t in pairs)
        else:
            text = "".join(json.dumps({"translation": {"de": s, "en": t}}) + "\n" for s, t in pairs)
        if kind == "jsonl.gz":
            path = folder / f"shard{k}.jsonl.gz"
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path = folder / f"shard{k}.{kind}"
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def parser(kind: str):
    if kind == "text":
        return parallel_text()
    if kind == "tsv":
        return tsv_pair()
    return jsonl_pair("translation.de", "translation.en")


def tokenize(example):
    return {"input_ids": example["source"].split(), "labels": example["target"].split()}


def stream(paths, kind="jsonl", **options) -> StreamingTokenBatches:
    settings = {"max_tokens": 120, "window_size": 40, "buffer_size": 120, "seed": 3}
    settings.update(options)
    return StreamingTokenBatches(paths, read_shard=ShardLines(parser(kind)), tokenize=tokenize, **settings)


def ids(batches) -> list[list[str]]:
    return [[example["input_ids"][0] for example in batch] for batch in batches]


def test_order_is_deterministic_per_seed_and_epoch_and_changes_across_epochs(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    first, second = stream(paths), stream(paths)
    assert ids(first) == ids(second)
    second.set_epoch(1)
    epoch1 = ids(second)
    assert epoch1 != ids(first)
    assert sorted(sum(epoch1, [])) == sorted(sum(ids(first), []))
    assert ids(stream(paths, seed=4)) != ids(first)


def test_every_example_of_an_epoch_is_seen_once_across_two_ranks(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    expected = sorted(f"s{k}_{i}" for k in range(NUM_SHARDS) for i in range(PER_SHARD))
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            dataset = stream(paths, num_replicas=2, rank=rank)
            dataset.set_epoch(epoch)
            seen += sum(ids(dataset), [])
        assert sorted(seen) == expected  # none missing, none twice


def test_shards_are_split_between_ranks_and_reshuffled_per_epoch(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    zero, one = stream(paths, num_replicas=2, rank=0), stream(paths, num_replicas=2, rank=1)
    assert not set(map(str, zero.rank_shards())) & set(map(str, one.rank_shards()))
    assert [zero.rank_shards(e) for e in range(4)] != [zero.rank_shards(0)] * 4


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "text", "tsv"])
def test_resume_mid_epoch_equals_the_uninterrupted_order(tmp_path, kind):
    paths = write_corpus(tmp_path, kind)
    whole = list(stream(paths, kind))
    # Inside the first buffer, at its last batch, in later buffers, and after the last batch of the epoch.
    cuts = sorted({1, 3, len(whole) // 2, len(whole) - 1, len(whole)})
    for cut in cuts:
        reader = stream(paths, kind)
        batches = iter(reader)
        for _ in range(cut):
            next(batches)
        state = json.loads(json.dumps(reader.state_dict()))  # what a checkpoint's JSON keeps
        resumed = stream(paths, kind)
        resumed.load_state_dict(state)
        assert ids(list(resumed)) == ids(whole[cut:]), f"resumed after {cut} of {len(whole)} batches"


def test_resume_reads_neither_earlier_shards_nor_the_lines_before_the_position(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=4)
    reader = stream(paths)
    whole = ids(reader)
    reader = stream(paths)
    batches = iter(reader)
    for _ in range(len(whole) * 3 // 4):
        next(batches)
    state = reader.state_dict()
    order = reader.rank_shards()
    assert state["shard"] > 0 and state["position"]["lines"] > 0
    for earlier in order[: state["shard"]]:
        earlier.unlink()  # reading one again would fail
    current = order[state["shard"]]
    data = current.read_bytes()
    offset = state["position"]["bytes"][0]
    current.write_bytes(b"x" * (offset - 1) + b"\n" + data[offset:])  # the lines before: not JSON any more
    resumed = stream(paths)
    resumed.load_state_dict(state)
    assert ids(resumed) == whole[len(whole) * 3 // 4 :]


def test_a_gzip_shard_is_read_again_from_its_start_but_earlier_lines_are_not_parsed(tmp_path):
    paths = write_corpus(tmp_path, "jsonl.gz", shards=2, per_shard=300)
    whole = ids(stream(paths))
    reader = stream(paths)
    batches = iter(reader)
    for _ in range(len(whole) - 3):
        next(batches)
    state = reader.state_dict()
    current = reader.rank_shards()[state["shard"]]
    lines = gzip.decompress(current.read_bytes()).splitlines(keepends=True)
    consumed = state["position"]["lines"]
    assert 0 < consumed < len(lines)
    current.write_bytes(gzip.compress(b"not json\n" * consumed + b"".join(lines[consumed:])))
    resumed = stream(paths)
    resumed.load_state_dict(state)
    assert ids(resumed) == whole[-3:]


def test_a_plain_read_shard_callable_resumes_by_skipping_in_the_current_shard(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    opened = []
    parse = jsonl_pair("translation.de", "translation.en")

    def read_shard(path):
        opened.append(path)
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield parse(line)

    def make(prefetch=True):
        return StreamingTokenBatches(
            paths,
            read_shard=read_shard,
            tokenize=tokenize,
            max_tokens=120,
            window_size=40,
            buffer_size=120,
            prefetch=prefetch,
        )

    whole = ids(make())
    reader = make(prefetch=False)  # no read-ahead still opening shards after the state is taken
    batches = iter(reader)
    for _ in range(len(whole) // 2):
        next(batches)
    state = reader.state_dict()
    assert set(state["position"]) == {"examples"}
    opened.clear()
    resumed = make()
    resumed.load_state_dict(state)
    assert ids(resumed) == whole[len(whole) // 2 :]
    assert opened[0] == resumed.rank_shards()[state["shard"]]
    assert len(opened) == NUM_SHARDS - state["shard"]


def test_every_batch_is_within_the_token_budget_and_most_of_it_is_real_tokens(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", per_shard=400)
    for max_tokens in (45, 120, 400):
        batches = list(stream(paths, max_tokens=max_tokens, window_size=200, buffer_size=400))
        real = padded = 0
        for batch in batches:
            src, tgt = [len(e["input_ids"]) for e in batch], [len(e["labels"]) for e in batch]
            assert len(batch) * max(max(src), max(tgt)) <= max_tokens
            real += sum(src) + sum(tgt)
            padded += len(batch) * (max(src) + max(tgt))
        assert real / padded > 0.85, max_tokens


def test_the_first_batch_of_an_epoch_is_its_first_buffers_costliest(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    reader = stream(paths, buffer_size=10_000, window_size=40)  # one buffer holds the epoch
    batches = list(reader)

    def cost(batch):
        return len(batch) * max(max(len(e["input_ids"]), len(e["labels"])) for e in batch)

    assert cost(batches[0]) == max(map(cost, batches))


def test_an_example_longer_than_the_budget_names_its_file_and_line(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=1)
    long = json.dumps({"translation": {"de": "x " * 300, "en": "y"}})
    with open(paths[0], "a", encoding="utf-8") as f:
        f.write(long + "\n")
    with pytest.raises(ValueError, match=rf"shard0\.jsonl, line {PER_SHARD + 1}: .*exceed max_tokens=120"):
        list(stream(paths))
    reader = stream(paths, skip_too_long=True)
    seen = sum(ids(reader), [])
    assert len(seen) == PER_SHARD and reader.num_skipped == 1


def test_a_malformed_line_names_its_file_and_line(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=1)
    lines = paths[0].read_text().splitlines(keepends=True)
    lines[41] = '{"translation": {"de": "a"\n'
    paths[0].write_text("".join(lines))
    with pytest.raises(ValueError, match=r"shard0\.jsonl, line 42: malformed JSON"):
        list(stream(paths))


def test_parallel_files_of_different_lengths_are_refused(tmp_path):
    paths = write_corpus(tmp_path, "text", shards=1)
    source, target = paths[0]
    target.write_text("".join(target.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(ValueError, match=r"shard0\.en ended after 168 lines"):
        list(stream(paths, "text"))


def test_a_position_saved_under_other_settings_is_refused(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    state = stream(paths).state_dict()
    for changed in ({"seed": 4}, {"buffer_size": 240}, {"num_replicas": 2}):
        with pytest.raises(ValueError, match=f"saved with {next(iter(changed))}="):
            stream(paths, **changed).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with shards_digest="):
        stream(paths[::-1]).load_state_dict(state)
    with pytest.raises(KeyError, match="missing"):
        stream(paths).load_state_dict({"epoch": 0})


def test_bad_settings_are_refused(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=2, per_shard=3)
    with pytest.raises(ValueError, match="2 shard\\(s\\) for 3 processes"):
        stream(paths, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="buffer_size=10 is smaller than window_size=40"):
        stream(paths, buffer_size=10)
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        stream(paths, max_tokens=0)


def test_a_set_epoch_to_the_current_epoch_keeps_a_loaded_position(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    whole = ids(stream(paths))
    reader = stream(paths)
    batches = iter(reader)
    next(batches), next(batches)
    resumed = stream(paths)
    resumed.load_state_dict(reader.state_dict())
    resumed.set_epoch(0)
    assert ids(resumed) == whole[2:]
    assert ids(resumed) == whole  # a finished pass starts the epoch over


def test_dataloader_workers_are_refused(tmp_path):
    paths = write_corpus(tmp_path, "jsonl", shards=1, per_shard=5)
    loader = DataLoader(stream(paths), batch_size=None, num_workers=1)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        list(loader)


def test_batch_tokenize_gives_the_batches_of_per_example_tokenize(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    calls = []

    def batch_tokenize(examples):
        calls.append(len(examples))
        return [tokenize(e) for e in examples]

    settings = dict(max_tokens=120, window_size=40, buffer_size=120, seed=3)
    reader = ShardLines(parser("jsonl"))
    batched = StreamingTokenBatches(paths, read_shard=reader, batch_tokenize=batch_tokenize, **settings)
    assert ids(batched) == ids(stream(paths))
    assert calls[0] == 120 and sum(calls) == NUM_SHARDS * PER_SHARD  # once per buffer
    with pytest.raises(ValueError, match="not both"):
        StreamingTokenBatches(
            paths, read_shard=reader, tokenize=tokenize, batch_tokenize=batch_tokenize, **settings
        )


def test_the_hilbert_index_visits_every_cell_once_stepping_to_a_neighbour():
    side = 16
    x, y = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    x, y = x.ravel(), y.ravel()
    index = hilbert_index(x, y, 4)
    assert sorted(index.tolist()) == list(range(side * side))
    path = np.argsort(index)
    steps = np.abs(np.diff(x[path])) + np.abs(np.diff(y[path]))
    assert (steps == 1).all()


def test_sizes_in_order_respect_the_budget_the_sentence_cap_and_the_multiple():
    costs = np.array([3, 5, 2, 2, 2, 2, 2, 2, 2, 9, 1, 1])
    assert sizes_in_order(costs, 10) == [2, 5, 2, 1, 2]
    assert sizes_in_order(costs, 10, max_sentences=3) == [2, 3, 3, 1, 1, 2]
    assert sizes_in_order(costs, 10, required_batch_size_multiple=2) == [2, 4, 2, 1, 1, 2]
    for sizes in (sizes_in_order(costs, 10), sizes_in_order(costs, 10, required_batch_size_multiple=2)):
        starts = np.cumsum([0] + sizes[:-1])
        assert all(n * costs[s : s + n].max() <= 10 for s, n in zip(starts, sizes, strict=True))
        assert sum(sizes) == len(costs)


def test_reading_the_next_buffer_ahead_changes_no_batch(tmp_path):
    paths = write_corpus(tmp_path, "jsonl")
    assert ids(stream(paths, prefetch=False)) == ids(stream(paths))
    reader = stream(paths, prefetch=False)
    batches = iter(reader)
    for _ in range(7):
        next(batches)
    resumed = stream(paths)
    resumed.load_state_dict(reader.state_dict())
    assert ids(resumed) == ids(stream(paths))[7:]


def test_skip_bad_lines_leaves_them_out_counted_and_reported(tmp_path, caplog):
    paths = write_corpus(tmp_path, "jsonl", shards=2)
    lines = paths[1].read_text().splitlines(keepends=True)
    lines[41] = '{"translation": {"de": "a"\n'
    lines[99] = '{"translation": {"de": "a", "en": 7}}\n'
    paths[1].write_text("".join(lines))
    with pytest.raises(ValueError, match=r"shard1\.jsonl, line 42: malformed JSON.*skip_bad_lines=True"):
        list(stream(paths))
    reader = ShardLines(parser("jsonl"), skip_bad_lines=True)

    def make():
        return StreamingTokenBatches(
            paths, read_shard=reader, tokenize=tokenize, max_tokens=120, window_size=40, buffer_size=120
        )

    with caplog.at_level("WARNING", logger="samplers.streaming.shard_lines"):
        whole = ids(make())
    assert len(sum(whole, [])) == 2 * PER_SHARD - 2 and reader.bad_lines == 2
    assert reader.bad_line_examples[0].startswith(f"{paths[1]}, line 42: malformed JSON")
    assert "line 100: field 'translation.en' is int" in reader.bad_line_examples[1]
    assert "skipped 2 bad line(s)" in caplog.text and "line 42" in caplog.text
    interrupted = make()
    batches = iter(interrupted)
    for _ in range(len(whole) - 2):
        next(batches)
    resumed = make()
    resumed.load_state_dict(interrupted.state_dict())
    assert ids(resumed) == whole[-2:]


def test_the_default_window_grows_with_the_token_budget_and_the_buffer_follows_it(tmp_path):
    from samplers.streaming.dataset import automatic_window_size

    shards = write_corpus(tmp_path, "jsonl")
    small = StreamingTokenBatches(
        shards, read_shard=ShardLines(parser("jsonl")), tokenize=tokenize, max_tokens=120
    )
    large = StreamingTokenBatches(
        shards, read_shard=ShardLines(parser("jsonl")), tokenize=tokenize, max_tokens=16384
    )
    assert (small.window_size, small.buffer_size) == (50_000, 50_000)  # never below 50,000 examples
    assert large.window_size == large.buffer_size == automatic_window_size(16384) == 12 * 16384
    explicit = StreamingTokenBatches(
        shards, read_shard=ShardLines(parser("jsonl")), tokenize=tokenize, max_tokens=16384, window_size=40
    )
    assert (explicit.window_size, explicit.buffer_size) == (40, 40)
    # a buffer smaller than the window the budget chose is refused, naming both
    with pytest.raises(ValueError, match="buffer_size=1000 is smaller than window_size=196608"):
        StreamingTokenBatches(
            shards,
            read_shard=ShardLines(parser("jsonl")),
            tokenize=tokenize,
            max_tokens=16384,
            buffer_size=1000,
        )
    # the automatic window changes nothing else: the stream still yields every example once
    seen = sum(len(batch) for batch in small)
    assert seen == NUM_SHARDS * PER_SHARD
