"""Data collators: turn a list of tokenized examples into one padded batch.

They need nothing from the tokenizer but `pad_token_id` (and `padding_side`, default right), so they work with the
project's tokenizers and with any Hugging Face tokenizer alike. Labels are padded here, never by `tokenizer.pad`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2s.tokenization.batch_encoding import BatchEncoding
from s2s.tokenization.padding import as_int_lists, pad_features, stack_values, to_tensor

__all__ = ["DataCollatorForSeq2Seq", "DataCollatorWithPadding", "default_data_collator", "shift_tokens_right"]


@dataclass
class DataCollatorForSeq2Seq:
    """Pad `input_ids`/`attention_mask` and `labels` of seq2seq examples, and add `decoder_input_ids`.

    Features are dicts of id lists (`input_ids`, `labels`, optionally `attention_mask`, any other keys; a
    `label` key is read as `labels`). Inputs pad with the tokenizer's pad id and the attention mask with 0;
    labels pad with `label_pad_token_id`. Both sides round up to `pad_to_multiple_of` (8 stays 8, 9 becomes 16).

    `decoder_input_ids` (labels shifted right behind the start token, -100 turned into the pad id) are added
    when `decoder_start_token_id` is given, else when `model` has `prepare_decoder_input_ids_from_labels`.
    With them in the batch, a trainer that computes the loss from logits (label smoothing) needs no other wiring.
    """

    tokenizer: Any
    """Anything with `pad_token_id` (ours or a Hugging Face tokenizer); its `padding_side` is honoured."""
    model: Any | None = None
    """If it has `prepare_decoder_input_ids_from_labels`, that builds `decoder_input_ids` from the padded labels."""
    padding: bool | str = True
    """True/"longest": pad to the longest in the batch; "max_length": to `max_length`; False: no padding."""
    max_length: int | None = None
    """Width for `padding="max_length"` (inputs and labels alike). Padding never truncates."""
    pad_to_multiple_of: int | None = None
    """Round the padded width up to a multiple of this (e.g. 8 for tensor cores)."""
    label_pad_token_id: int = -100
    """Value for padded label positions; -100 is what cross-entropy ignores."""
    return_tensors: str = "pt"
    """"pt" (torch), "np" (numpy) or None (lists)."""
    decoder_start_token_id: int | None = None
    """Build `decoder_input_ids` with this start token (the project's models use bos = 2); takes precedence
    over `model.prepare_decoder_input_ids_from_labels`."""

    def __call__(
        self, features: Sequence[Mapping[str, Any]], return_tensors: str | None = None
    ) -> BatchEncoding:
        return_tensors = self.return_tensors if return_tensors is None else return_tensors
        features = [_rename(feature, "label", "labels") for feature in features]
        batch = pad_features(
            features,
            pad_token_id=self.tokenizer.pad_token_id,
            label_pad_token_id=self.label_pad_token_id,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side=getattr(self.tokenizer, "padding_side", "right"),
            return_tensors=return_tensors,
        )
        if "labels" in batch and "decoder_input_ids" not in batch and _is_id_batch(batch["labels"]):
            decoder_input_ids = self._decoder_input_ids(batch["labels"])
            if decoder_input_ids is not None:
                batch["decoder_input_ids"] = _like(decoder_input_ids, return_tensors)
        return batch

    def _decoder_input_ids(self, labels: Any) -> Any:
        if self.decoder_start_token_id is not None:
            return shift_tokens_right(
                as_int_lists(labels),
                decoder_start_token_id=self.decoder_start_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
        if prepare is None:
            return None
        import torch

        return prepare(labels=torch.as_tensor(np.asarray(as_int_lists(labels), dtype=np.int64)))


@dataclass
class DataCollatorWithPadding:
    """Pad tokenized inputs (and sequence labels, with -100) to the longest in the batch, or as `padding` says.

    `label` and `label_ids` are renamed `labels`, as in Hugging Face.
    """

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> BatchEncoding:
        features = [_rename(_rename(f, "label", "labels"), "label_ids", "labels") for f in features]
        return pad_features(
            features,
            pad_token_id=self.tokenizer.pad_token_id,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side=getattr(self.tokenizer, "padding_side", "right"),
            return_tensors=self.return_tensors,
        )


def default_data_collator(features: Sequence[Any], return_tensors: str = "pt") -> dict[str, Any]:
    """Stack features that already have equal lengths (no padding); `label`/`label_ids` become `labels`.

    Integer labels become int64, float labels float32; strings are kept as lists; None values are dropped.
    """
    if not features:
        raise ValueError("default_data_collator got an empty list of features")
    rows = [f if isinstance(f, Mapping) else vars(f) for f in features]
    rows = [_rename(_rename(row, "label", "labels"), "label_ids", "labels") for row in rows]
    batch: dict[str, Any] = {}
    for key, first in rows[0].items():
        if first is None:
            continue
        try:
            values = [row[key] for row in rows]
        except KeyError as err:
            raise ValueError(f"every feature needs the key {key!r} that features[0] has") from err
        try:
            batch[key] = stack_values(values, return_tensors, name=key)
        except ValueError as err:
            if not _is_ragged(values):
                raise
            # stack_values' own message speaks for the padding collators ("only <keys> are padded"); this
            # collator pads nothing, so say that and name the ones that do.
            raise ValueError(
                f"{key!r} holds sequences of different lengths, and default_data_collator pads nothing: collate "
                f"with DataCollatorWithPadding(tokenizer) or DataCollatorForSeq2Seq(tokenizer), or pad {key!r} to "
                "one length before collating"
            ) from err
    return batch


def _is_ragged(values: list[Any]) -> bool:
    """True when the values are sequences that do not stack into one array (different lengths)."""
    try:
        np.asarray([v.tolist() if hasattr(v, "tolist") else v for v in values])
    except ValueError:
        return True
    return False


def shift_tokens_right(
    labels: Sequence[Sequence[int]], *, decoder_start_token_id: int, pad_token_id: int
) -> list[list[int]]:
    """Decoder inputs for teacher forcing: the start token, then each label but the last; negative label ids
    (the -100 padding) become `pad_token_id`, so the embedding lookup never sees -100."""
    return [
        [decoder_start_token_id] + [t if t >= 0 else pad_token_id for t in row[:-1]] if row else []
        for row in labels
    ]


def _rename(feature: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    feature = dict(feature)
    if old in feature and new not in feature:
        feature[new] = feature.pop(old)
    return feature


def _is_id_batch(labels: Any) -> bool:
    """True for sequence labels (ids per position), not one class label per example."""
    if hasattr(labels, "ndim"):
        return labels.ndim == 2
    if not labels:
        return False
    first = labels[0]
    return isinstance(first, (list, tuple)) or getattr(first, "ndim", 0) >= 1


def _like(values: Any, return_tensors: str | None) -> Any:
    """Convert whatever `prepare_decoder_input_ids_from_labels` or the shift returned to the batch's format."""
    if hasattr(values, "detach"):
        if return_tensors == "pt":
            return values
        values = values.detach().cpu().numpy()
        return values if return_tensors == "np" else values.tolist()
    return to_tensor(as_int_lists(values), return_tensors, name="decoder_input_ids")
