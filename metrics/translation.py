"""Corpus and sentence BLEU, chrF and TER, computed from sacrebleu's sufficient statistics.

Every corpus score goes through the mergeable ``*Stats`` objects, so a score built from batches or from
several processes is the same number as the all-at-once score, and both equal sacrebleu's ``corpus_score``.
"""

from __future__ import annotations

from collections.abc import Sequence

from metrics.references import RefLayout, as_streams, check_predictions, per_example_references
from metrics.sacre_stats import (
    BleuOptions,
    BleuStats,
    ChrfOptions,
    ChrfStats,
    TerOptions,
    TerStats,
    bleu_metric,
    chrf_metric,
    segment_statistics,
    ter_metric,
)

References = Sequence[str] | Sequence[Sequence[str]]


def _prepare(predictions, references, ref_layout: RefLayout) -> tuple[list[str], list[list[str | None]]]:
    preds = check_predictions(predictions)
    refs = per_example_references(references, len(preds), ref_layout=ref_layout)
    return preds, as_streams(refs)


def bleu_segments(
    predictions: Sequence[str], references: References, *, ref_layout: RefLayout = "auto", **options
) -> tuple[list[list[int]], BleuOptions]:
    """Per-example BLEU statistics ``[sys_len, ref_len, *correct, *total]`` and the options used."""
    opts = BleuOptions(**options)
    preds, streams = _prepare(predictions, references, ref_layout)
    return segment_statistics(bleu_metric(opts), preds, streams), opts


def bleu_stats(
    predictions: Sequence[str], references: References, *, ref_layout: RefLayout = "auto", **options
) -> BleuStats:
    """Mergeable BLEU statistics of a batch; ``sum(...)`` them and call ``.compute()`` for the corpus BLEU.

    Options: ``tokenize``, ``lowercase``, ``smooth_method``, ``smooth_value``, ``max_ngram_order``,
    ``effective_order`` (see ``BleuOptions``).
    """
    segments, opts = bleu_segments(predictions, references, ref_layout=ref_layout, **options)
    return BleuStats.from_segments(segments, opts)


def bleu(
    predictions: Sequence[str],
    references: References,
    *,
    sentence: bool = False,
    ref_layout: RefLayout = "auto",
    **options,
) -> dict[str, float] | list[dict[str, float]]:
    """Corpus BLEU as sacrebleu computes it (0-100), with precisions, bp, ratio, sys_len and ref_len.

    ``references`` holds one string per example, or one list of strings per example, or sacrebleu-style
    reference streams (``ref_layout='streams'`` when the shape is ambiguous). With ``sentence=True`` the
    result is one dict per example; there ``effective_order`` defaults to True, as in ``sacrebleu.sentence_bleu``.
    """
    if sentence:
        options.setdefault("effective_order", True)
        segments, opts = bleu_segments(predictions, references, ref_layout=ref_layout, **options)
        return [BleuStats.from_segments([seg], opts).compute() for seg in segments]
    return bleu_stats(predictions, references, ref_layout=ref_layout, **options).compute()


def chrf_segments(
    predictions: Sequence[str], references: References, *, ref_layout: RefLayout = "auto", **options
) -> tuple[list[list[int]], ChrfOptions]:
    opts = ChrfOptions(**options)
    preds, streams = _prepare(predictions, references, ref_layout)
    return segment_statistics(chrf_metric(opts), preds, streams), opts


def chrf_stats(
    predictions: Sequence[str], references: References, *, ref_layout: RefLayout = "auto", **options
) -> ChrfStats:
    """Mergeable chrF statistics. Options: ``char_order``, ``word_order`` (2 for chrF++), ``beta``,
    ``lowercase``, ``whitespace``, ``eps_smoothing``."""
    segments, opts = chrf_segments(predictions, references, ref_layout=ref_layout, **options)
    return ChrfStats.from_segments(segments, opts)


def chrf(
    predictions: Sequence[str],
    references: References,
    *,
    sentence: bool = False,
    ref_layout: RefLayout = "auto",
    **options,
) -> dict[str, float] | list[dict[str, float]]:
    """Corpus chrF (``word_order=0``, key ``chrf``) or chrF++ (``word_order=2``, key ``chrf++``), 0-100."""
    if sentence:
        segments, opts = chrf_segments(predictions, references, ref_layout=ref_layout, **options)
        return [ChrfStats.from_segments([seg], opts).compute() for seg in segments]
    return chrf_stats(predictions, references, ref_layout=ref_layout, **options).compute()


def ter_segments(
    predictions: Sequence[str], references: References, *, ref_layout: RefLayout = "auto", **options
) -> tuple[list[list[float]], TerOptions]:
    opts = TerOptions(**options)
    preds, streams = _prepare(predictions, references, ref_layout)
    return segment_statistics(ter_metric(opts), preds, streams), opts


def ter_stats(
    predictions: Sequence[str], references: References, *, ref_layout: RefLayout = "auto", **options
) -> TerStats:
    """Mergeable TER statistics. Options: ``normalized``, ``no_punct``, ``asian_support``, ``case_sensitive``."""
    segments, opts = ter_segments(predictions, references, ref_layout=ref_layout, **options)
    return TerStats.from_segments(segments, opts)


def ter(
    predictions: Sequence[str],
    references: References,
    *,
    sentence: bool = False,
    ref_layout: RefLayout = "auto",
    **options,
) -> dict[str, float] | list[dict[str, float]]:
    """Corpus TER (0-100, lower is better), with the summed edits and reference length."""
    if sentence:
        segments, opts = ter_segments(predictions, references, ref_layout=ref_layout, **options)
        return [TerStats.from_segments([seg], opts).compute() for seg in segments]
    return ter_stats(predictions, references, ref_layout=ref_layout, **options).compute()
