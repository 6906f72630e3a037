"""ROUGE as rouge-score computes it, averaged exactly, mergeable, and optionally scored over processes.

The corpus ROUGE reported for summarization (and in ``shared/data/README.md``) is the mean of the per-example
F1 of ``rouge_score.rouge_scorer.RougeScorer``, times 100. Floating-point sums depend on their order, so a
mean built from batches would drift from the all-at-once mean in the last bits. ``RougeStats`` keeps the sums
exact (every float is a dyadic rational; the sum is kept as a ``Fraction``), so batches, processes and
chunks in any order give the same float, which equals ``statistics.mean`` of the per-example scores.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing import get_context

from metrics.references import RefLayout, check_predictions, per_example_references

DEFAULT_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at a run of . ! ? (then optional closing quotes/brackets) followed by spaces, unless the
# word before a single "." is a common abbreviation or an initial ("Mr. Smith", "e.g. this", "J. Doe").
# Lowercase text splits too: generated summaries are often lowercased.
_SENTENCE_END = re.compile(r"(\S*?)([.!?]+)([\"'\u201d\u2019)\]]*)[ \t]+(?=\S)")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "eg",
        "ie",
        "approx",
        "no",
        "fig",
        "al",
        "inc",
        "ltd",
        "co",
        "dept",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)


def _sentence_break(match: re.Match) -> str:
    word, marks, closing = match.group(1), match.group(2), match.group(3)
    word_key = word.lstrip("(\"'\u201c\u2018").lower()
    keep = (
        marks == "."
        and not closing
        and (word_key in _ABBREVIATIONS or len(word_key) == 1 and word_key.isalpha())
    )
    return match.group(0) if keep else f"{word}{marks}{closing}\n"


def split_sentences(text: str) -> str:
    """Put one sentence per line (what rougeLsum reads), deterministically and without nltk data.

    Existing line breaks are kept; blank lines are dropped (rouge-score ignores them anyway).
    """
    lines = (_SENTENCE_END.sub(_sentence_break, line.strip()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class RougeOptions:
    rouge_types: tuple[str, ...] = DEFAULT_ROUGE_TYPES
    use_stemmer: bool = True
    split_sentences: bool = False
    """Split plain text into one sentence per line before scoring (only rougeLsum looks at lines)."""

    def __post_init__(self) -> None:
        if isinstance(self.rouge_types, str):
            raise TypeError(f"rouge_types must be a sequence of names, got the str {self.rouge_types!r}")
        object.__setattr__(self, "rouge_types", tuple(self.rouge_types))
        if not self.rouge_types:
            raise ValueError("rouge_types is empty")
        for t in self.rouge_types:
            if not re.fullmatch(r"rouge[1-9]|rougeL|rougeLsum", t):
                raise ValueError(f"unknown rouge type {t!r}; use rouge1..rouge9, rougeL or rougeLsum")


def _exact_sum(values: Sequence[float]) -> Fraction:
    """Exact sum of floats: each is n / 2**k, so bring them to the largest denominator and add integers."""
    ratios = [float(v).as_integer_ratio() for v in values]
    if not ratios:
        return Fraction(0)
    den = max(d for _, d in ratios)
    return Fraction(sum(n * (den // d) for n, d in ratios), den)


@dataclass(frozen=True)
class RougeStats:
    """Exact sums of per-example precision, recall and F1 for each rouge type, and the example count."""

    sums: tuple[tuple[Fraction, Fraction, Fraction], ...]
    """One (precision, recall, fmeasure) triple of sums per entry of ``options.rouge_types``."""
    count: int = 0
    options: RougeOptions = field(default_factory=RougeOptions)

    @classmethod
    def zero(cls, options: RougeOptions | None = None) -> RougeStats:
        options = options or RougeOptions()
        return cls(tuple((Fraction(0),) * 3 for _ in options.rouge_types), 0, options)

    @classmethod
    def from_scores(cls, scores: Sequence[Sequence[Sequence[float]]], options: RougeOptions) -> RougeStats:
        """``scores[i][t]`` is the (precision, recall, fmeasure) of example ``i`` for rouge type ``t``."""
        sums = tuple(
            tuple(_exact_sum([ex[t][k] for ex in scores]) for k in range(3))
            for t in range(len(options.rouge_types))
        )
        return cls(sums, len(scores), options)

    def __add__(self, other: RougeStats) -> RougeStats:
        if not isinstance(other, RougeStats):
            return NotImplemented
        if self.options != other.options:
            raise ValueError(
                f"cannot add RougeStats with different options: {self.options} vs {other.options}"
            )
        sums = tuple(tuple(a + b for a, b in zip(x, y)) for x, y in zip(self.sums, other.sums))
        return RougeStats(sums, self.count + other.count, self.options)

    def __radd__(self, other):  # lets sum(list_of_stats) start from 0
        return self if other == 0 else NotImplemented

    def compute(self) -> dict[str, float]:
        """Mean F1 x 100 under each type's name, and mean precision/recall x 100 as ``<type>_precision`` and
        ``<type>_recall``."""
        if self.count == 0:
            raise ValueError("RougeStats has no examples; nothing to average")
        out: dict[str, float] = {}
        for name, (_, _, f) in zip(self.options.rouge_types, self.sums):
            out[name] = 100 * float(f / self.count)
        for name, (p, r, _) in zip(self.options.rouge_types, self.sums):
            out[f"{name}_precision"] = 100 * float(p / self.count)
            out[f"{name}_recall"] = 100 * float(r / self.count)
        return out


@functools.lru_cache(maxsize=8)
def _scorer(rouge_types: tuple[str, ...], use_stemmer: bool):
    from rouge_score import rouge_scorer  # imports nltk and absl: only when ROUGE is asked for

    return rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)


def _score_chunk(
    rouge_types: tuple[str, ...], use_stemmer: bool, preds: list[str], refs: list[tuple[str, ...]]
) -> list[tuple[tuple[float, float, float], ...]]:
    scorer = _scorer(rouge_types, use_stemmer)
    out = []
    for pred, group in zip(preds, refs):
        # rouge-score's argument order is (target, prediction)
        s = scorer.score(group[0], pred) if len(group) == 1 else scorer.score_multi(list(group), pred)
        out.append(tuple((s[t].precision, s[t].recall, s[t].fmeasure) for t in rouge_types))
    return out


def rouge_segments(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    ref_layout: RefLayout = "auto",
    num_workers: int = 1,
    **options,
) -> tuple[list[tuple[tuple[float, float, float], ...]], RougeOptions]:
    """Per-example (precision, recall, fmeasure) for each rouge type, and the options used.

    ``num_workers > 1`` scores contiguous chunks in that many processes (``0``: one per CPU). Each example
    is scored by the same code on its own, so the scores are identical to the serial ones. Starting the
    processes costs about a second (each imports rouge-score), so it pays off only for thousands of examples
    on otherwise idle cores.
    """
    opts = RougeOptions(**options)
    preds = check_predictions(predictions)
    refs = per_example_references(references, len(preds), ref_layout=ref_layout)
    if opts.split_sentences:
        preds = [split_sentences(p) for p in preds]
        refs = [tuple(split_sentences(r) for r in group) for group in refs]
    workers = num_workers if num_workers > 0 else (os.cpu_count() or 1)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    workers = min(workers, len(preds))
    if workers <= 1:
        return _score_chunk(opts.rouge_types, opts.use_stemmer, preds, refs), opts
    size = math.ceil(len(preds) / workers)
    chunks = [(preds[i : i + size], refs[i : i + size]) for i in range(0, len(preds), size)]
    # spawn, not fork: the caller may be a trainer process with torch's threads running
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_score_chunk, opts.rouge_types, opts.use_stemmer, p, r) for p, r in chunks]
        scores = [row for fut in futures for row in fut.result()]
    return scores, opts


def rouge_stats(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    ref_layout: RefLayout = "auto",
    num_workers: int = 1,
    **options,
) -> RougeStats:
    """Mergeable ROUGE statistics of a batch; ``sum(...)`` them and ``.compute()`` for the corpus ROUGE."""
    scores, opts = rouge_segments(
        predictions, references, ref_layout=ref_layout, num_workers=num_workers, **options
    )
    return RougeStats.from_scores(scores, opts)


def rouge(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    rouge_types: Sequence[str] = DEFAULT_ROUGE_TYPES,
    use_stemmer: bool = True,
    split_sentences: bool = False,
    sentence: bool = False,
    ref_layout: RefLayout = "auto",
    num_workers: int = 1,
) -> dict[str, float] | list[dict[str, float]]:
    """Mean per-example ROUGE F1 x 100 (plus precision and recall) with rouge-score.

    rougeLsum treats each line as a sentence: give summaries one sentence per line, or pass
    ``split_sentences=True`` to split plain text first. With several references per example the best
    one per rouge type counts (rouge-score's ``score_multi``). ``sentence=True`` gives one dict per example.
    """
    scores, opts = rouge_segments(
        predictions,
        references,
        ref_layout=ref_layout,
        num_workers=num_workers,
        rouge_types=tuple(rouge_types),
        use_stemmer=use_stemmer,
        split_sentences=split_sentences,
    )
    if sentence:
        return [RougeStats.from_scores([row], opts).compute() for row in scores]
    return RougeStats.from_scores(scores, opts).compute()
