"""Mergeable sufficient statistics for BLEU, chrF and TER, finalised by sacrebleu's own formulas.

sacrebleu scores a corpus from per-segment statistics that it simply sums (n-gram matches and totals and
lengths for BLEU, character/word n-gram counts for chrF, edits and reference lengths for TER). Summing those
per batch or per process and finalising once gives exactly the corpus score, without gathering strings
(what fairseq does during validation). BLEU and chrF statistics are integers, so any split is exact. TER's
reference length is a float when an example has several references (their average): it is kept as an exact
``Fraction``, so that merging in any order gives the same number.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from sacrebleu.metrics import BLEU, CHRF, TER


@dataclass(frozen=True)
class BleuOptions:
    tokenize: str = "13a"
    """sacrebleu tokenizer: '13a' (default), 'intl', 'char', 'none', 'zh', ..."""
    lowercase: bool = False
    smooth_method: str = "exp"
    """'exp' (sacrebleu default), 'floor', 'add-k' or 'none'."""
    smooth_value: float | None = None
    """For 'floor' and 'add-k'; None takes sacrebleu's default (0.1 and 1)."""
    max_ngram_order: int = 4
    effective_order: bool = False
    """Ignore n-gram orders without any hypothesis n-gram; sacrebleu uses it for sentence BLEU."""

    def __post_init__(self) -> None:
        if self.smooth_method not in BLEU.SMOOTH_DEFAULTS:
            raise ValueError(
                f"smooth_method must be one of {sorted(BLEU.SMOOTH_DEFAULTS)}, got {self.smooth_method!r}"
            )
        if self.tokenize not in BLEU.TOKENIZERS:
            raise ValueError(f"tokenize must be one of {sorted(BLEU.TOKENIZERS)}, got {self.tokenize!r}")
        if self.max_ngram_order < 1:
            raise ValueError(f"max_ngram_order must be >= 1, got {self.max_ngram_order}")


@dataclass(frozen=True)
class ChrfOptions:
    char_order: int = 6
    word_order: int = 0
    """0 gives chrF, 2 gives chrF++."""
    beta: int = 2
    lowercase: bool = False
    whitespace: bool = False
    eps_smoothing: bool = False

    def __post_init__(self) -> None:
        if self.char_order < 1 or self.word_order < 0:
            raise ValueError(
                f"need char_order >= 1 and word_order >= 0, got {self.char_order}, {self.word_order}"
            )

    @property
    def name(self) -> str:
        return "chrf" + "+" * self.word_order


@dataclass(frozen=True)
class TerOptions:
    normalized: bool = False
    no_punct: bool = False
    asian_support: bool = False
    case_sensitive: bool = False


@functools.lru_cache(maxsize=32)
def bleu_metric(options: BleuOptions) -> BLEU:
    return BLEU(
        lowercase=options.lowercase,
        tokenize=options.tokenize,
        smooth_method=options.smooth_method,
        smooth_value=options.smooth_value,
        max_ngram_order=options.max_ngram_order,
        effective_order=options.effective_order,
        force=True,  # the "looks tokenized" warning is noise inside a training loop
    )


@functools.lru_cache(maxsize=32)
def chrf_metric(options: ChrfOptions) -> CHRF:
    return CHRF(
        char_order=options.char_order,
        word_order=options.word_order,
        beta=options.beta,
        lowercase=options.lowercase,
        whitespace=options.whitespace,
        eps_smoothing=options.eps_smoothing,
    )


@functools.lru_cache(maxsize=32)
def ter_metric(options: TerOptions) -> TER:
    return TER(
        normalized=options.normalized,
        no_punct=options.no_punct,
        asian_support=options.asian_support,
        case_sensitive=options.case_sensitive,
    )


def segment_statistics(metric, predictions: list[str], ref_streams: list[list[str | None]]) -> list[list]:
    """Per-segment statistics as sacrebleu computes them for its corpus score and its significance tests.

    This is sacrebleu's (underscore) ``_extract_corpus_statistics``, stable since sacrebleu 2.0; every use
    goes through here so that a change upstream touches one line.
    """
    return metric._extract_corpus_statistics(predictions, ref_streams)


def _check_same(kind: str, a, b) -> None:
    if a != b:
        raise ValueError(f"cannot add {kind} computed with different options: {a} vs {b}")


@dataclass(frozen=True)
class BleuStats:
    """Summed BLEU statistics: n-gram matches and totals per order, hypothesis and reference lengths."""

    correct: tuple[int, ...]
    total: tuple[int, ...]
    sys_len: int = 0
    ref_len: int = 0
    n_examples: int = 0
    options: BleuOptions = field(default_factory=BleuOptions)

    @classmethod
    def zero(cls, options: BleuOptions | None = None) -> BleuStats:
        options = options or BleuOptions()
        empty = (0,) * options.max_ngram_order
        return cls(empty, empty, options=options)

    @classmethod
    def from_segments(cls, segments: Sequence[Sequence[int]], options: BleuOptions) -> BleuStats:
        """Sum sacrebleu's per-segment lists ``[sys_len, ref_len, *correct, *total]``."""
        if not segments:
            return cls.zero(options)
        order = options.max_ngram_order
        col = [int(sum(c)) for c in zip(*segments)]  # ints: exact in any order
        return cls(tuple(col[2 : 2 + order]), tuple(col[2 + order :]), col[0], col[1], len(segments), options)

    def __add__(self, other: BleuStats) -> BleuStats:
        if not isinstance(other, BleuStats):
            return NotImplemented
        _check_same("BleuStats", self.options, other.options)
        return BleuStats(
            tuple(a + b for a, b in zip(self.correct, other.correct)),
            tuple(a + b for a, b in zip(self.total, other.total)),
            self.sys_len + other.sys_len,
            self.ref_len + other.ref_len,
            self.n_examples + other.n_examples,
            self.options,
        )

    def __radd__(self, other):  # lets sum(list_of_stats) start from 0
        return self if other == 0 else NotImplemented

    def to_list(self) -> list[int]:
        """Flat integer vector (e.g. for an all-reduce across processes); see ``from_list``."""
        return [self.sys_len, self.ref_len, *self.correct, *self.total, self.n_examples]

    @classmethod
    def from_list(cls, values: Sequence[int], options: BleuOptions | None = None) -> BleuStats:
        options = options or BleuOptions()
        order = options.max_ngram_order
        v = [int(x) for x in values]
        if len(v) != 3 + 2 * order:
            raise ValueError(f"expected {3 + 2 * order} values for max_ngram_order={order}, got {len(v)}")
        return cls(tuple(v[2 : 2 + order]), tuple(v[2 + order : 2 + 2 * order]), v[0], v[1], v[-1], options)

    def compute(self) -> dict[str, float]:
        o = self.options
        # compute_bleu mutates its lists with add-k smoothing: hand it copies
        score = BLEU.compute_bleu(
            list(self.correct),
            list(self.total),
            self.sys_len,
            self.ref_len,
            smooth_method=o.smooth_method,
            smooth_value=o.smooth_value,
            effective_order=o.effective_order,
            max_ngram_order=o.max_ngram_order,
        )
        out = {"bleu": float(score.score)}
        out.update({f"precision_{n + 1}": float(p) for n, p in enumerate(score.precisions)})
        out.update(
            bp=float(score.bp),
            ratio=float(score.ratio),
            sys_len=float(self.sys_len),
            ref_len=float(self.ref_len),
        )
        return out


@dataclass(frozen=True)
class ChrfStats:
    """Summed chrF statistics: [hypothesis, reference, match] counts per character and word n-gram order."""

    counts: tuple[int, ...]
    n_examples: int = 0
    options: ChrfOptions = field(default_factory=ChrfOptions)

    @classmethod
    def zero(cls, options: ChrfOptions | None = None) -> ChrfStats:
        options = options or ChrfOptions()
        return cls((0,) * (3 * (options.char_order + options.word_order)), 0, options)

    @classmethod
    def from_segments(cls, segments: Sequence[Sequence[int]], options: ChrfOptions) -> ChrfStats:
        if not segments:
            return cls.zero(options)
        return cls(tuple(int(sum(c)) for c in zip(*segments)), len(segments), options)

    def __add__(self, other: ChrfStats) -> ChrfStats:
        if not isinstance(other, ChrfStats):
            return NotImplemented
        _check_same("ChrfStats", self.options, other.options)
        counts = tuple(a + b for a, b in zip(self.counts, other.counts))
        return ChrfStats(counts, self.n_examples + other.n_examples, self.options)

    def __radd__(self, other):
        return self if other == 0 else NotImplemented

    def compute(self) -> dict[str, float]:
        metric = chrf_metric(self.options)
        return {self.options.name: float(metric._compute_f_score(list(self.counts)))}


@dataclass(frozen=True)
class TerStats:
    """Summed TER statistics: edits and reference length (the average over an example's references)."""

    num_edits: int = 0
    ref_length: Fraction = Fraction(0)
    n_examples: int = 0
    options: TerOptions = field(default_factory=TerOptions)

    @classmethod
    def zero(cls, options: TerOptions | None = None) -> TerStats:
        return cls(options=options or TerOptions())

    @classmethod
    def from_segments(cls, segments: Sequence[Sequence[float]], options: TerOptions) -> TerStats:
        edits = sum(int(e) for e, _ in segments)
        ref_length = sum((Fraction(r) for _, r in segments), Fraction(0))
        return cls(edits, ref_length, len(segments), options)

    def __add__(self, other: TerStats) -> TerStats:
        if not isinstance(other, TerStats):
            return NotImplemented
        _check_same("TerStats", self.options, other.options)
        return TerStats(
            self.num_edits + other.num_edits,
            self.ref_length + other.ref_length,
            self.n_examples + other.n_examples,
            self.options,
        )

    def __radd__(self, other):
        return self if other == 0 else NotImplemented

    def compute(self) -> dict[str, float]:
        ref_length = float(self.ref_length)
        score = ter_metric(self.options)._compute_score_from_stats([self.num_edits, ref_length])
        return {"ter": float(score.score), "num_edits": float(self.num_edits), "ref_length": ref_length}
