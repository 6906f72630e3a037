"""``compute_metrics`` for a Trainer: ids in, BLEU/chrF/TER/ROUGE and ``gen_len`` out.

Works with the ``EvalPrediction`` of our trainer and of Hugging Face's (``predictions``, ``label_ids``) and with
a plain ``(predictions, labels)`` tuple. Predictions may be generated ids (``predict_with_generate``), argmax
ids (``preprocess_logits_for_metrics``) or raw logits (argmax taken here). Eval containers pad with -100
across batches and processes; that is mapped to the pad id before decoding, so no user code has to.
The tokenizer is duck-typed: anything with ``batch_decode(ids, skip_special_tokens=True)`` and
``pad_token_id``. numpy only; never torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metrics.rouge_scoring import RougeStats, rouge_stats
from metrics.translation import bleu_stats, chrf_stats, ter_stats

IGNORE_INDEX = -100
KNOWN_METRICS = ("bleu", "chrf", "chrf++", "ter", "rouge")


def _as_id_matrix(x: Any, pad_id: int, *, what: str) -> np.ndarray:
    """A 2-D int64 array of ids from ids, ragged lists of ids or 3-D logits; -100 becomes ``pad_id``."""
    if isinstance(x, tuple):  # models that return (logits, extra outputs...)
        x = x[0]
    try:
        arr = np.asarray(x)
    except ValueError:  # ragged nested lists: pad them
        rows = [np.asarray(r).reshape(-1) for r in x]
        width = max((len(r) for r in rows), default=0)
        arr = np.full((len(rows), width), pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            arr[i, : len(r)] = r
    if arr.dtype == object:
        raise TypeError(f"{what} must be ids or logits, got an object array (ragged or mixed types)")
    if arr.ndim == 3:
        arr = arr.argmax(axis=-1)  # raw logits (batch, length, vocab)
    elif arr.ndim == 1:
        arr = arr[None, :] if arr.size else arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D ids or 3-D logits, got shape {arr.shape}")
    is_float = np.issubdtype(arr.dtype, np.floating)
    if is_float and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise ValueError(f"{what} is a 2-D float array that is not integral: pass ids or 3-D logits")
    arr = arr.astype(np.int64)
    return np.where(arr == IGNORE_INDEX, pad_id, arr)


def _unpack(eval_pred: Any) -> tuple[Any, Any]:
    if hasattr(eval_pred, "predictions"):
        return eval_pred.predictions, getattr(eval_pred, "label_ids", None)
    if isinstance(eval_pred, (tuple, list)) and len(eval_pred) >= 2:
        return eval_pred[0], eval_pred[1]
    raise TypeError(
        "compute_metrics needs an EvalPrediction (with .predictions and .label_ids) or a "
        f"(predictions, labels) tuple, got {type(eval_pred).__name__}"
    )


class Seq2SeqMetrics:
    """Callable ``compute_metrics``: ``Seq2SeqMetrics(tokenizer, metrics=("bleu", "rouge"))``.

    Returns a flat dict of floats: ``bleu``, ``chrf``, ``chrf++``, ``ter``, the ROUGE F1 of each type
    (``rouge1`` ...) and ``gen_len``, the mean number of non-pad tokens in the predictions.

    Called with ``compute_result=False/True`` (a trainer's per-batch metrics mode), it adds each batch to
    mergeable statistics and returns the corpus scores on the call with ``compute_result=True``; the result
    equals the all-at-once call.
    """

    def __init__(
        self,
        tokenizer: Any,
        metrics: Sequence[str] = ("bleu", "rouge"),
        *,
        bleu_options: Mapping[str, Any] | None = None,
        chrf_options: Mapping[str, Any] | None = None,
        ter_options: Mapping[str, Any] | None = None,
        rouge_options: Mapping[str, Any] | None = None,
        sentence_per_line: bool = False,
        num_workers: int = 1,
    ) -> None:
        """``rouge_options``: ``rouge_types``, ``use_stemmer`` (default True). ``sentence_per_line=True``
        splits decoded predictions and labels into one sentence per line, which rougeLsum needs.
        ``num_workers`` scores ROUGE over that many processes."""
        if not hasattr(tokenizer, "batch_decode"):
            raise TypeError(
                f"tokenizer must have batch_decode(ids, skip_special_tokens=True); got {tokenizer!r}"
            )
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("tokenizer.pad_token_id is None: -100 cannot be mapped to a pad id for decoding")
        if isinstance(metrics, str):
            metrics = (metrics,)
        unknown = [m for m in metrics if m not in KNOWN_METRICS]
        if unknown or not metrics:
            raise ValueError(f"unknown metrics {unknown}; choose from {KNOWN_METRICS}")
        self.tokenizer = tokenizer
        self.metrics = tuple(metrics)
        self.bleu_options = dict(bleu_options or {})
        self.chrf_options = dict(chrf_options or {})
        self.ter_options = dict(ter_options or {})
        self.rouge_options = {"use_stemmer": True, **(rouge_options or {})}
        if sentence_per_line:
            self.rouge_options["split_sentences"] = True
        self.num_workers = num_workers
        self._pending: dict[str, Any] | None = None

    def decode(self, ids: Any, *, what: str = "predictions") -> list[str]:
        matrix = _as_id_matrix(ids, int(self.tokenizer.pad_token_id), what=what)
        texts = self.tokenizer.batch_decode(matrix.tolist(), skip_special_tokens=True)
        return [t.strip() for t in texts]

    def batch_stats(self, eval_pred: Any) -> dict[str, Any]:
        """Mergeable statistics of one batch: add the dicts key by key across batches or processes."""
        preds, labels = _unpack(eval_pred)
        if labels is None:
            raise ValueError("label_ids is None: metrics need the references (labels) to compare against")
        pad_id = int(self.tokenizer.pad_token_id)
        pred_ids = _as_id_matrix(preds, pad_id, what="predictions")
        hyps = [t.strip() for t in self.tokenizer.batch_decode(pred_ids.tolist(), skip_special_tokens=True)]
        refs = self.decode(labels, what="label_ids")
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} predictions but {len(refs)} label rows")
        return self.text_stats(hyps, refs, gen_tokens=int(np.count_nonzero(pred_ids != pad_id)))

    def score_texts(self, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """The corpus scores of decoded hypotheses against reference texts, e.g. the raw references of a test
        set, which the tokenized labels may have truncated (`max_target_length`) or normalized. No `gen_len`."""
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        scores = self.finalize(
            self.text_stats([h.strip() for h in hypotheses], [r.strip() for r in references])
        )
        scores.pop("gen_len")
        return scores

    def text_stats(self, hyps: list[str], refs: list[str], *, gen_tokens: int = 0) -> dict[str, Any]:
        """Mergeable statistics of decoded texts (``gen_tokens``: generated tokens, for ``gen_len``)."""
        stats: dict[str, Any] = {"gen_tokens": gen_tokens, "count": len(hyps)}
        if not hyps:
            return stats
        for name in self.metrics:
            if name == "bleu":
                stats[name] = bleu_stats(hyps, refs, **self.bleu_options)
            elif name == "chrf":
                stats[name] = chrf_stats(hyps, refs, **{"word_order": 0, **self.chrf_options})
            elif name == "chrf++":
                stats[name] = chrf_stats(hyps, refs, **{**self.chrf_options, "word_order": 2})
            elif name == "ter":
                stats[name] = ter_stats(hyps, refs, **self.ter_options)
            else:
                stats[name] = rouge_stats(hyps, refs, num_workers=self.num_workers, **self.rouge_options)
        return stats

    @staticmethod
    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {k: a[k] + b[k] if k in a and k in b else a.get(k, b.get(k)) for k in {*a, *b}}

    def finalize(self, stats: dict[str, Any]) -> dict[str, float]:
        if not stats.get("count"):
            raise ValueError("no examples were scored")
        out: dict[str, float] = {}
        for name in self.metrics:
            result = stats[name].compute()
            if isinstance(stats[name], RougeStats):
                out.update({t: result[t] for t in stats[name].options.rouge_types})
            elif name == "bleu":
                out["bleu"] = result["bleu"]
            elif name == "ter":
                out["ter"] = result["ter"]
            else:
                out.update(result)
        out["gen_len"] = stats["gen_tokens"] / stats["count"]
        return out

    def __call__(self, eval_pred: Any, compute_result: bool | None = None) -> dict[str, float]:
        stats = self.batch_stats(eval_pred)
        if compute_result is None:
            return self.finalize(stats)
        self._pending = stats if self._pending is None else self.merge(self._pending, stats)
        if not compute_result:
            return {}
        pending, self._pending = self._pending, None
        return self.finalize(pending)
