"""Paired bootstrap resampling between two systems, for BLEU, chrF, TER and each ROUGE type.

Follows sacrebleu's paired bootstrap (``--paired-bs``, after Koehn 2004 and Moses'
``bootstrap-hypothesis-difference-significance.pl``): both systems are rescored on the same resampled
example sets; the p-value is the share of resamples whose centred absolute difference reaches the observed
one (with sacrebleu's +1 correction). The resampling is done on per-example statistics, so each resample is a
vector sum and one finalisation, not a rescoring of strings. Runs offline; numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from metrics.rouge_scoring import rouge_segments
from metrics.sacre_stats import BleuStats, ChrfStats, TerStats
from metrics.translation import bleu_segments, chrf_segments, ter_segments

_ROUGE_TYPES = {f"rouge{n}" for n in range(1, 10)} | {"rougeL", "rougeLsum"}


def paired_bootstrap(
    metric: str,
    predictions_a: Sequence[str],
    predictions_b: Sequence[str],
    references,
    *,
    n_samples: int = 1000,
    seed: int | None = 12345,
    **options,
) -> dict[str, float]:
    """Compare system B against baseline A on ``metric`` ('bleu', 'chrf', 'ter', 'rouge1', 'rouge2',
    'rougeL', 'rougeLsum', ...). ``options`` go to the metric (e.g. ``tokenize``, ``use_stemmer``).

    Returns ``score_a``, ``score_b``, ``delta`` (B - A), ``p_value``, the 95% percentile interval of the
    resampled delta (``delta_low``, ``delta_high``) and of each system's score (``a_low`` ... ``b_high``).
    """
    if len(predictions_a) != len(predictions_b):
        raise ValueError(
            f"predictions_a has {len(predictions_a)} examples, predictions_b {len(predictions_b)}: "
            "a paired test needs the same examples"
        )
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    stats_a, score_fn = _per_example(metric, predictions_a, references, options)
    stats_b, _ = _per_example(metric, predictions_b, references, options)
    return _paired_bootstrap_stats(stats_a, stats_b, score_fn, n_samples=n_samples, seed=seed)


def _per_example(metric: str, predictions, references, options) -> tuple[np.ndarray, Callable]:
    """Per-example statistics as rows of a float64 matrix, and the function that scores a summed row."""
    if metric == "bleu":
        segments, opts = bleu_segments(predictions, references, **options)
        return np.asarray(segments, dtype=np.float64), lambda v: BleuStats.from_list(
            [*np.rint(v).astype(np.int64), 0], opts
        ).compute()["bleu"]
    if metric in ("chrf", "chrf++"):
        if metric == "chrf++":
            options = {"word_order": 2, **options}
        segments, opts = chrf_segments(predictions, references, **options)
        return np.asarray(segments, dtype=np.float64), lambda v: ChrfStats(
            tuple(int(x) for x in np.rint(v)), 0, opts
        ).compute()[opts.name]
    if metric == "ter":
        segments, opts = ter_segments(predictions, references, **options)
        return np.asarray(segments, dtype=np.float64), lambda v: TerStats(
            int(round(v[0])), v[1], 0, opts
        ).compute()["ter"]
    if metric in _ROUGE_TYPES:
        options = dict(options)
        layout, workers = options.pop("ref_layout", "auto"), options.pop("num_workers", 1)
        scores, _ = rouge_segments(
            predictions, references, ref_layout=layout, num_workers=workers, rouge_types=(metric,), **options
        )
        # one column: the F1 of this rouge type; the last column counts examples for the mean
        rows = np.asarray([[row[0][2], 1.0] for row in scores], dtype=np.float64)
        return rows, lambda v: 100.0 * v[0] / v[1]
    raise ValueError(f"unknown metric {metric!r}; use bleu, chrf, chrf++, ter or a rouge type like rougeL")


def _paired_bootstrap_stats(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    score_fn: Callable[[np.ndarray], float],
    *,
    n_samples: int,
    seed: int | None,
) -> dict[str, float]:
    n = len(stats_a)
    rng = np.random.default_rng(seed)
    scores_a, scores_b = np.empty(n_samples), np.empty(n_samples)
    # resample in blocks of rows to bound memory; one block (the usual case) draws the same indices
    # as sacrebleu's rng.choice(n, size=(n_samples, n)) with the same seed
    block = max(1, 4_000_000 // max(n, 1))
    for start in range(0, n_samples, block):
        rows = min(block, n_samples - start)
        idx = rng.choice(n, size=(rows, n), replace=True)
        offsets = (idx + n * np.arange(rows)[:, None]).ravel()
        counts = np.bincount(offsets, minlength=rows * n).reshape(rows, n).astype(np.float64)
        sums_a, sums_b = counts @ stats_a, counts @ stats_b
        for r in range(rows):
            scores_a[start + r] = score_fn(sums_a[r])
            scores_b[start + r] = score_fn(sums_b[r])
    score_a, score_b = score_fn(stats_a.sum(0)), score_fn(stats_b.sum(0))
    observed = abs(score_b - score_a)
    sample_diffs = np.abs(scores_b - scores_a)
    centred = sample_diffs - sample_diffs.mean()  # the null hypothesis: no difference on average
    # >= where sacrebleu has >: with a tie (e.g. two identical systems, every difference 0) sacrebleu's count
    # is 0 and its p-value 1/(n+1) calls identical systems significantly different; >= gives 1.0. The two
    # agree whenever no resampled difference equals the observed one exactly.
    p_value = (np.sum(centred >= observed).item() + 1) / (n_samples + 1)
    delta = scores_b - scores_a
    return {
        "score_a": float(score_a),
        "score_b": float(score_b),
        "delta": float(score_b - score_a),
        "p_value": float(p_value),
        "delta_low": float(np.percentile(delta, 2.5)),
        "delta_high": float(np.percentile(delta, 97.5)),
        "a_low": float(np.percentile(scores_a, 2.5)),
        "a_high": float(np.percentile(scores_a, 97.5)),
        "b_low": float(np.percentile(scores_b, 2.5)),
        "b_high": float(np.percentile(scores_b, 97.5)),
        "n_samples": float(n_samples),
    }
