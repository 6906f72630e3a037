"""Properties of the length-aware samplers: coverage, sharding, determinism, exact resume, longest first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from samplers import (
    LengthGroupedSampler,
    SortishSampler,
    TokenBudgetBatchSampler,
    example_costs,
    padding_efficiency,
)

FAST = settings(max_examples=25, deadline=None)
INDEX_SAMPLERS = {
    "length_grouped": lambda lengths, bs, **kw: LengthGroupedSampler(lengths, bs, **kw),
    "length_grouped_mega2": lambda lengths, bs, **kw: LengthGroupedSampler(
        lengths, bs, mega_batch_mult=2, **kw
    ),
    "sortish": lambda lengths, bs, **kw: SortishSampler(lengths, bs, **kw),
    "sortish_chunk3": lambda lengths, bs, **kw: SortishSampler(lengths, bs, chunk_mult=3, **kw),
}


def random_lengths(n: int, seed: int, *, pairs: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 60, size=(n, 2) if pairs else n)


def budget(lengths, max_tokens: int = 120, **kw) -> TokenBudgetBatchSampler:
    return TokenBudgetBatchSampler(lengths, max_tokens, **kw)


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


@pytest.mark.parametrize("make", INDEX_SAMPLERS.values(), ids=INDEX_SAMPLERS.keys())
@FAST
@given(n=st.integers(1, 400), bs=st.integers(1, 33), seed=st.integers(0, 10**6), pairs=st.booleans())
def test_every_index_exactly_once_per_epoch(make, n, bs, seed, pairs):
    sampler = make(random_lengths(n, seed, pairs=pairs), bs, seed=seed)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(n))
        assert len(sampler) == n
        assert all(type(i) is int for i in order)


@FAST
@given(
    n=st.integers(1, 400),
    seed=st.integers(0, 10**6),
    pairs=st.booleans(),
    max_sentences=st.none() | st.integers(1, 9),
)
def test_token_budget_covers_every_index_once_and_never_exceeds_budget(n, seed, pairs, max_sentences):
    lengths = random_lengths(n, seed, pairs=pairs)
    sampler = budget(lengths, 150, max_sentences=max_sentences, seed=seed)
    costs = example_costs(sampler.lengths)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(n))
        assert len(batches) == len(sampler)
        for batch in batches:
            assert 0 < len(batch) * costs[batch].max() <= 150
            assert max_sentences is None or len(batch) <= max_sentences


def test_token_budget_padded_cost_counts_the_longer_side():
    # Source 10, target 40: the padded labels tensor is the larger one, so the cost is 40 per example.
    sampler = budget([(10, 40)] * 8, 100, shuffle=False)
    assert [len(b) for b in sampler] == [2, 2, 2, 2]


def test_token_budget_rounds_batches_to_the_required_multiple():
    sampler = budget([10] * 50, 130, required_batch_size_multiple=4, shuffle=False)
    # 13 fit the budget; rounded down to 12; the last batch takes the 2 left over.
    assert sampler.batch_sizes == [12, 12, 12, 12, 2]
    assert all(len(b) * 10 <= 130 for b in sampler)


@pytest.mark.parametrize("make", INDEX_SAMPLERS.values(), ids=INDEX_SAMPLERS.keys())
@FAST
@given(n=st.integers(1, 300), bs=st.integers(1, 17), replicas=st.integers(2, 5), seed=st.integers(0, 10**6))
def test_index_shards_are_disjoint_complete_and_equal(make, n, bs, replicas, seed):
    lengths = random_lengths(n, seed, pairs=False)
    shards = [list(make(lengths, bs, seed=seed, num_replicas=replicas, rank=r)) for r in range(replicas)]
    per_rank = -(-n // replicas)
    assert all(len(s) == per_rank for s in shards)  # equal counts, hence equal batch counts
    # Rebuild the global order from the strided shards: the padding repeats its first items.
    globally = [shards[j % replicas][j // replicas] for j in range(per_rank * replicas)]
    assert sorted(globally[:n]) == list(range(n))
    assert globally[n:] == globally[: len(globally) - n]


@FAST
@given(n=st.integers(1, 300), replicas=st.integers(2, 5), seed=st.integers(0, 10**6), pairs=st.booleans())
def test_token_budget_shards_are_disjoint_complete_and_equal(n, replicas, seed, pairs):
    lengths = random_lengths(n, seed, pairs=pairs)
    shards = [list(budget(lengths, seed=seed, num_replicas=replicas, rank=r)) for r in range(replicas)]
    counts = {len(s) for s in shards}
    assert len(counts) == 1, f"unequal batch counts across ranks: {[len(s) for s in shards]}"
    globally = [shards[j % replicas][j // replicas] for j in range(counts.pop() * replicas)]
    real = len(budget(lengths, seed=seed).batch_sizes)
    assert sorted(flat(globally[:real])) == list(range(n))
    assert globally[real:] == globally[: len(globally) - real]


def batch_size_8(make):
    return lambda lengths, **kw: make(lengths, 8, **kw)


ALL_SAMPLERS = {
    **{name: batch_size_8(make) for name, make in INDEX_SAMPLERS.items()},
    "token_budget": lambda lengths, **kw: budget(lengths, **kw),
}


@pytest.mark.parametrize("make", ALL_SAMPLERS.values(), ids=ALL_SAMPLERS.keys())
def test_same_seed_and_epoch_same_order_other_epoch_or_seed_differs(make):
    lengths = random_lengths(500, 0, pairs=True)
    first, again = make(lengths, seed=3), make(lengths, seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    assert list(first) == list(again)
    first.set_epoch(1)
    again.set_epoch(1)
    assert list(first) == list(again)
    assert list(first) != list(make(lengths, seed=3))  # epoch 1 vs epoch 0
    assert list(make(lengths, seed=4)) != list(make(lengths, seed=3))


@pytest.mark.parametrize("make", ALL_SAMPLERS.values(), ids=ALL_SAMPLERS.keys())
@FAST
@given(n=st.integers(1, 200), seed=st.integers(0, 10**6), epoch=st.integers(0, 3), data=st.data())
def test_resume_from_any_position_yields_the_rest(make, n, seed, epoch, data):
    lengths = random_lengths(n, seed, pairs=True)
    straight = make(lengths, seed=seed)
    straight.set_epoch(epoch)
    full = list(straight)
    k = data.draw(st.integers(0, len(full)))
    interrupted = make(lengths, seed=seed)
    interrupted.set_epoch(epoch)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(k)]
    state = interrupted.state_dict()
    assert state["epoch"] == epoch and state["consumed"] == k

    resumed = make(lengths, seed=seed)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # what a training loop does at the top of the epoch: keeps the position
    assert head + list(resumed) == full
    # A complete pass is over: the next iteration is the whole epoch again.
    assert list(resumed) == full


def test_set_epoch_to_a_new_epoch_resets_the_position():
    sampler = LengthGroupedSampler(list(range(1, 41)), 4)
    iterator = iter(sampler)
    next(iterator)
    sampler.set_epoch(1)
    assert sampler.state_dict()["consumed"] == 0 and len(list(sampler)) == 40


def test_load_state_dict_rejects_a_state_from_other_data_or_world_size():
    state = LengthGroupedSampler(list(range(1, 41)), 4).state_dict()
    with pytest.raises(ValueError, match="num_examples=40"):
        LengthGroupedSampler(list(range(1, 31)), 4).load_state_dict(state)
    with pytest.raises(ValueError, match="num_replicas=1"):
        LengthGroupedSampler(list(range(1, 41)), 4, num_replicas=2).load_state_dict(state)
    with pytest.raises(KeyError, match="consumed"):
        LengthGroupedSampler(list(range(1, 41)), 4).load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="outside"):
        LengthGroupedSampler(list(range(1, 41)), 4).load_state_dict({"epoch": 0, "consumed": 41})


class RecordingDataset(Dataset):
    """Records which examples were read, to show a resume reads none of the skipped ones."""

    def __init__(self, lengths):
        self.lengths, self.read = lengths, []

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, index):
        self.read.append(index)
        return torch.ones(int(self.lengths[index]))


@pytest.mark.parametrize("kind", ["sortish", "token_budget"])
def test_resume_through_a_dataloader_reads_no_skipped_example(kind):
    lengths = random_lengths(100, 1, pairs=False)
    dataset = RecordingDataset(lengths)

    def loader(**kw):
        if kind == "token_budget":
            return DataLoader(dataset, batch_sampler=budget(lengths, 200, **kw), collate_fn=list)
        return DataLoader(dataset, batch_size=8, sampler=SortishSampler(lengths, 8, **kw), collate_fn=list)

    full = [[len(x) for x in batch] for batch in loader()]
    dataset.read.clear()
    resumed = loader()
    step = 5  # the trainer's count of batches already trained on
    resumed_sampler = resumed.batch_sampler if kind == "token_budget" else resumed.sampler
    resumed_sampler.load_state_dict({"epoch": 0, "consumed": step * (1 if kind == "token_budget" else 8)})
    rest = [[len(x) for x in batch] for batch in resumed]
    assert rest == full[step:]
    assert len(dataset.read) == sum(len(b) for b in full[step:])


@pytest.mark.parametrize("make", INDEX_SAMPLERS.values(), ids=INDEX_SAMPLERS.keys())
@FAST
@given(n=st.integers(1, 400), bs=st.integers(1, 20), seed=st.integers(0, 10**6), pairs=st.booleans())
def test_longest_example_is_in_the_first_full_batch(make, n, bs, seed, pairs):
    lengths = random_lengths(n, seed, pairs=pairs)
    sampler = make(lengths, bs, seed=seed)
    order = list(sampler)
    costs = example_costs(sampler.lengths)
    assert costs[order[:bs]].max() == costs.max()


@FAST
@given(n=st.integers(1, 300), seed=st.integers(0, 10**6), replicas=st.integers(1, 4), shuffle=st.booleans())
def test_token_budget_costliest_batches_come_first_on_every_rank(n, seed, replicas, shuffle):
    lengths = random_lengths(n, seed, pairs=True)
    whole = budget(lengths, seed=seed, shuffle=shuffle)
    costs = whole.costs
    worst = max(len(b) * costs[b].max() for b in whole)
    firsts = [
        list(budget(lengths, seed=seed, shuffle=shuffle, num_replicas=replicas, rank=r))[0]
        for r in range(replicas)
    ]
    assert len(firsts[0]) * costs[firsts[0]].max() == worst
    # Rank r opens with the r-th costliest batch (while there are as many batches as ranks).
    top = sorted((len(b) * costs[b].max() for b in whole), reverse=True)[:replicas]
    assert [len(b) * costs[b].max() for b in firsts[: len(top)]] == top


@pytest.mark.parametrize("n", [1003, 64 * 50 + 1, 65, 7])
def test_sortish_handles_a_short_last_batch(n):
    # Hugging Face's legacy sortish_sampler_indices crashes on NumPy 2 whenever n % batch_size != 0: it
    # shuffles a ragged list of batches with np.random.permutation.
    lengths = random_lengths(n, n, pairs=False)
    order = list(SortishSampler(lengths, 64))
    assert sorted(order) == list(range(n))


@pytest.mark.parametrize("make", ALL_SAMPLERS.values(), ids=ALL_SAMPLERS.keys())
def test_length_aware_orders_pad_less_than_random_batches(make):
    # Translation-like pairs: the target length follows the source length, with noise.
    rng = np.random.default_rng(7)
    src = rng.integers(1, 60, 2000)
    lengths = np.stack([src, np.maximum(1, src + rng.integers(-4, 5, 2000))], axis=1)
    sampler = make(lengths, seed=0)
    if isinstance(sampler, TokenBudgetBatchSampler):
        batches = list(sampler)
    else:
        order = list(sampler)
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    random_order = np.random.default_rng(0).permutation(2000)
    random_batches = [random_order[i : i + 8] for i in range(0, 2000, 8)]
    assert padding_efficiency(batches, lengths) > padding_efficiency(random_batches, lengths) + 0.1


def test_token_budget_names_an_example_longer_than_the_budget():
    with pytest.raises(
        ValueError, match=r"example 2 with \(src, tgt\) lengths \(5, 300\).*max_tokens=100.*1 more"
    ):
        budget([(3, 4), (5, 6), (5, 300), (1, 1), (200, 1)], 100)


def test_token_budget_skips_too_long_examples_counted_and_logged(caplog):
    lengths = [3, 400, 5, 7, 500, 2]
    with caplog.at_level("WARNING", logger="samplers.token_budget"):
        sampler = budget(lengths, 100, skip_too_long=True)
    assert sampler.num_skipped == 2 and sampler.skipped_indices == [1, 4]
    assert "skipping 2 of 6" in caplog.text and "example 1 with length 400" in caplog.text
    assert sorted(flat(sampler)) == [0, 2, 3, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_sentences": 0}, "max_sentences"),
        ({"num_replicas": 2, "rank": 2}, "rank"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, message):
    kwargs = {"max_tokens": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        TokenBudgetBatchSampler([1, 2, 3], **kwargs)
