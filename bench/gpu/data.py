"""Synthetic translation data for the GPU check: random token ids with WMT-like lengths, the same examples
for both toolkits (no `datasets`, no tokenizer, no download).

Lengths in subword tokens follow what WMT14 en-de looks like after a 32k BPE: log-normal source lengths
(median 25, a long tail, cut to 2..126), target lengths the source length times a log-normal ratio around
1.1; every sequence ends with eos. Ids are uniform over the vocabulary above the special ids.
"""

from __future__ import annotations

import torch

PAD, EOS, FIRST_ORDINARY_ID = 0, 3, 4
MAX_LENGTH = 127  # tokens before eos


def wmt_like_lengths(count: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source lengths, target lengths), each (count,) int64, eos not included."""
    g = torch.Generator().manual_seed(seed)
    source = torch.exp(torch.randn(count, generator=g) * 0.55 + torch.log(torch.tensor(25.0)))
    ratio = torch.exp(torch.randn(count, generator=g) * 0.15 + 0.1)
    target = source * ratio
    clip = lambda x: x.round().clamp(2, MAX_LENGTH).long()  # noqa: E731
    return clip(source), clip(target)


def translation_pairs(count: int, *, vocab_size: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """`count` examples {"input_ids": source + eos, "labels": target + eos} (unpadded lists)."""
    source_lengths, target_lengths = wmt_like_lengths(count, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    total = int(source_lengths.sum() + target_lengths.sum())
    ids = torch.randint(FIRST_ORDINARY_ID, vocab_size, (total,), generator=g).tolist()
    examples, at = [], 0
    for s, t in zip(source_lengths.tolist(), target_lengths.tolist()):
        examples.append({"input_ids": ids[at : at + s] + [EOS], "labels": ids[at + s : at + s + t] + [EOS]})
        at += s + t
    return examples


def source_batches(count: int, batch_size: int, *, vocab_size: int, seed: int = 2):
    """Padded source batches (input_ids, attention_mask) of `count` WMT-like sources, in batches of
    `batch_size`, sorted by length as an evaluation loop would batch them."""
    lengths, _ = wmt_like_lengths(count, seed=seed)
    lengths = lengths.sort(descending=True).values + 1  # + eos
    g = torch.Generator().manual_seed(seed + 1)
    batches = []
    for start in range(0, count, batch_size):
        chunk = lengths[start : start + batch_size]
        ids = torch.randint(FIRST_ORDINARY_ID, vocab_size, (len(chunk), int(chunk.max())), generator=g)
        positions = torch.arange(ids.size(1))[None, :]
        ids[positions == (chunk[:, None] - 1)] = EOS
        ids[positions >= chunk[:, None]] = PAD
        batches.append((ids, (ids != PAD).long()))
    return batches
