"""One place that understands the two ways people lay out references.

- per example (Hugging Face style): ``references[i]`` is a string, or a list of strings for example ``i``;
- streams (sacrebleu style): ``references[k][i]`` is the ``k``-th reference of example ``i``.

Both are normalised to per-example tuples. A nested list with one entry per example is read per example;
otherwise, if every entry has one line per example, as streams. Pass ``ref_layout='streams'`` for sacrebleu
streams that happen to number as many as the examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

RefLayout = Literal["auto", "examples", "streams"]


def check_predictions(predictions: Sequence[str]) -> list[str]:
    """Return the predictions as a list of str, or raise naming the first bad entry."""
    if isinstance(predictions, str):
        raise TypeError("predictions must be a sequence of strings, got a single str; wrap it in a list")
    out = list(predictions)
    if not out:
        raise ValueError("predictions is empty: a corpus score needs at least one example")
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(f"predictions[{i}] must be str, got {type(p).__name__}")
    return out


def per_example_references(
    references: Sequence[str] | Sequence[Sequence[str]],
    n_examples: int,
    *,
    ref_layout: RefLayout = "auto",
) -> list[tuple[str, ...]]:
    """Normalise ``references`` to one tuple of reference strings per example."""
    if isinstance(references, str):
        raise TypeError("references must be a sequence (one entry per example), got a single str")
    refs = list(references)
    if ref_layout not in ("auto", "examples", "streams"):
        raise ValueError(f"ref_layout must be 'auto', 'examples' or 'streams', got {ref_layout!r}")
    if not refs:
        raise ValueError("references is empty")
    flat = all(isinstance(r, str) for r in refs)
    if flat:
        if ref_layout == "streams":
            raise ValueError("ref_layout='streams' needs a list of reference lists, got a list of strings")
        layout = "examples"
    else:
        for i, r in enumerate(refs):
            if isinstance(r, str) or not isinstance(r, Sequence):
                raise TypeError(
                    f"references[{i}] is a {type(r).__name__}; mix of strings and lists is not allowed"
                )
        layout = ref_layout if ref_layout != "auto" else _guess_layout(refs, n_examples)
    if layout == "streams":
        return _from_streams(refs, n_examples)
    if len(refs) != n_examples:
        raise ValueError(f"got {n_examples} predictions but {len(refs)} references (one entry per example)")
    out = []
    for i, r in enumerate(refs):
        group = (r,) if isinstance(r, str) else tuple(r)
        if not group:
            raise ValueError(f"references[{i}] is an empty list: each example needs at least one reference")
        for j, s in enumerate(group):
            if not isinstance(s, str):
                raise TypeError(f"references[{i}][{j}] must be str, got {type(s).__name__}")
        out.append(group)
    return out


def _guess_layout(refs: list, n_examples: int) -> str:
    # One list per example wins a tie: it is what batches and Seq2SeqMetrics produce, and a batch that
    # happens to have as many examples as references per example must not change meaning.
    if len(refs) == n_examples:
        return "examples"
    if all(len(stream) == n_examples for stream in refs):
        return "streams"
    raise ValueError(
        f"references fit neither layout for {n_examples} predictions: {len(refs)} entries, and not every "
        "entry has one reference per prediction"
    )


def _from_streams(streams: list, n_examples: int) -> list[tuple[str, ...]]:
    for k, stream in enumerate(streams):
        if len(stream) != n_examples:
            raise ValueError(f"reference stream {k} has {len(stream)} lines, predictions have {n_examples}")
    out = []
    for i in range(n_examples):
        # None marks a missing reference (variable number of references, as sacrebleu allows)
        group = tuple(stream[i] for stream in streams if stream[i] is not None)
        if not group:
            raise ValueError(f"example {i} has no reference in any stream")
        for s in group:
            if not isinstance(s, str):
                raise TypeError(f"reference of example {i} must be str, got {type(s).__name__}")
        out.append(group)
    return out


def as_streams(per_example: list[tuple[str, ...]]) -> list[list[str | None]]:
    """Turn per-example references into sacrebleu's streams, padding short groups with None."""
    width = max(len(g) for g in per_example)
    return [[g[k] if k < len(g) else None for g in per_example] for k in range(width)]
