"""BLEU, chrF, TER (sacrebleu) and ROUGE (rouge-score), usable without torch.

Corpus scores: ``bleu``, ``chrf``, ``ter``, ``rouge`` (plain dicts of floats; ``sentence=True`` for one dict
per example). Mergeable statistics for batches and processes: ``bleu_stats``, ``chrf_stats``, ``ter_stats``,
``rouge_stats`` give ``BleuStats``/``ChrfStats``/``TerStats``/``RougeStats``, which add with ``+`` (or ``sum``)
and finalise with ``.compute()`` to exactly the all-at-once score. ``paired_bootstrap`` compares two systems.
``Seq2SeqMetrics`` is a ``compute_metrics`` for a trainer. Command line: ``python -m metrics``.
"""

from metrics.bootstrap import paired_bootstrap
from metrics.rouge_scoring import RougeOptions, RougeStats, rouge, rouge_stats, split_sentences
from metrics.sacre_stats import BleuOptions, BleuStats, ChrfOptions, ChrfStats, TerOptions, TerStats
from metrics.seq2seq import Seq2SeqMetrics
from metrics.translation import bleu, bleu_stats, chrf, chrf_stats, ter, ter_stats

__all__ = [
    "BleuOptions",
    "BleuStats",
    "ChrfOptions",
    "ChrfStats",
    "RougeOptions",
    "RougeStats",
    "Seq2SeqMetrics",
    "TerOptions",
    "TerStats",
    "bleu",
    "bleu_stats",
    "chrf",
    "chrf_stats",
    "paired_bootstrap",
    "rouge",
    "rouge_stats",
    "split_sentences",
    "ter",
    "ter_stats",
]
