"""The `Tokenizer` interface: text <-> ids with the calls Hugging Face users know.

Backends (`SentencePieceTokenizer`, `HFTokenizer`) only encode a list of strings to ids without special tokens and
decode ids back to text; everything else (eos, truncation, padding, labels, tensors, decoding of -100 and special
ids, saving) lives here once, so both backends behave the same.

Contract (docs/architecture.md): sources and targets end with `eos`, no `bos`; labels are padded with -100.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from s2s.tokenization.batch_encoding import BatchEncoding
from s2s.tokenization.padding import (
    as_int_lists,
    pad_features,
    pad_rows,
    pad_to_array,
    padded_width,
    padding_strategy,
    to_tensor,
)

CONFIG_FILE = "tokenizer_config.json"
FORMAT_VERSION = 1
SPECIAL_TOKEN_NAMES = ("pad_token", "unk_token", "bos_token", "eos_token")
DEFAULT_SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


class Tokenizer(ABC):
    """Text <-> ids. Use `train_tokenizer`, `load_tokenizer` or `Tokenizer.from_pretrained` to get one."""

    backend: ClassVar[str]
    """Name written to tokenizer_config.json; `load_tokenizer` dispatches on it."""
    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]

    def __init__(
        self,
        special_tokens: dict[str, str | None],
        *,
        model_max_length: int | None = None,
        padding_side: str = "right",
    ) -> None:
        self.special_tokens = {name: special_tokens.get(name) for name in SPECIAL_TOKEN_NAMES}
        self.model_max_length = model_max_length
        """Default limit for `truncation=True` and `padding="max_length"` without `max_length`."""
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.padding_side = padding_side
        self._special_ids = {}
        for name, token in self.special_tokens.items():
            self._special_ids[name] = None if token is None else self._token_to_id(token)
        for name in ("pad_token", "eos_token"):
            if self._special_ids[name] is None:
                raise ValueError(
                    f"the {name} {self.special_tokens[name]!r} is not in the vocabulary; pass the token the model "
                    f"uses, e.g. {name}='</s>' (project tokenizers use {DEFAULT_SPECIAL_TOKENS})"
                )
        self._skip_ids = frozenset(i for i in self._special_ids.values() if i is not None)

    # ---- backend hooks -------------------------------------------------------------------------------------
    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, without special tokens."""

    @abstractmethod
    def _decode_batch(self, ids: list[list[int]]) -> list[str]:
        """Detokenized text of each row (rows hold no negative or special ids)."""

    @abstractmethod
    def _token_to_id(self, token: str) -> int | None:
        """Id of `token`, or None when it is not in the vocabulary."""

    @abstractmethod
    def _id_to_token(self, index: int) -> str: ...

    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """Sub-word pieces of `text` (no special tokens)."""

    @abstractmethod
    def get_vocab(self) -> dict[str, int]: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def _save_model(self, directory: Path) -> str:
        """Write the backend's model file into `directory`; return its file name."""

    @classmethod
    @abstractmethod
    def _from_saved(cls, model_path: Path, config: dict[str, Any]) -> Tokenizer: ...

    # ---- special tokens ------------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        return self._special_ids["pad_token"]

    @property
    def eos_token_id(self) -> int:
        return self._special_ids["eos_token"]

    @property
    def bos_token_id(self) -> int | None:
        return self._special_ids["bos_token"]

    @property
    def unk_token_id(self) -> int | None:
        return self._special_ids["unk_token"]

    @property
    def pad_token(self) -> str:
        return self.special_tokens["pad_token"]

    @property
    def eos_token(self) -> str:
        return self.special_tokens["eos_token"]

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens["bos_token"]

    @property
    def unk_token(self) -> str | None:
        return self.special_tokens["unk_token"]

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(self._skip_ids)

    @property
    def all_special_tokens(self) -> list[str]:
        return [token for token in self.special_tokens.values() if token is not None]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"pad={self.pad_token_id}, unk={self.unk_token_id}, bos={self.bos_token_id}, eos={self.eos_token_id})"
        )

    # ---- encoding ------------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        text_target: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        max_target_length: int | None = None,
        truncation: bool | str = False,
        padding: bool | str = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool = True,
        label_pad_token_id: int = -100,
    ) -> BatchEncoding:
        """Encode sources (`text`) and/or targets (`text_target`, returned as `labels`).

        Each sequence ends with eos (unless `add_special_tokens=False`); truncation to `max_length` keeps that eos.
        `max_target_length` limits the labels (default: `max_length`). Labels are padded with
        `label_pad_token_id` (-100), so they can go straight into a loss. Given only `text_target`, the targets
        come back as `input_ids`, as in Hugging Face. A single string gives flat lists (a batch of one with
        `return_tensors`).
        """
        if text is None and text_target is None:
            raise ValueError("pass text= (sources) and/or text_target= (targets)")
        truncate = _truncation_flag(truncation)
        options = dict(
            truncation=truncate,
            padding=padding,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=return_tensors,
            add_special_tokens=add_special_tokens,
        )
        if text is not None and text_target is not None:
            n_src = 1 if isinstance(text, str) else len(text)
            n_tgt = 1 if isinstance(text_target, str) else len(text_target)
            if n_src != n_tgt or isinstance(text, str) != isinstance(text_target, str):
                raise ValueError(
                    f"text has {n_src} item(s) but text_target has {n_tgt}; pass one target per source"
                )
        target_length = max_target_length if max_target_length is not None else max_length
        if text is None:
            return self._encode_side(
                text_target, "text_target", max_length=target_length, mask=return_attention_mask, **options
            )
        batch = self._encode_side(text, "text", max_length=max_length, mask=return_attention_mask, **options)
        if text_target is not None:
            labels = self._encode_side(
                text_target,
                "text_target",
                max_length=target_length,
                mask=False,
                pad_value=label_pad_token_id,
                **options,
            )
            batch["labels"] = labels["input_ids"]
        return batch

    def encode(
        self,
        text: str,
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool = False,
    ) -> list[int]:
        """Ids of one text (ending with eos unless `add_special_tokens=False`)."""
        if not isinstance(text, str):
            raise TypeError(
                f"encode takes one string, got {type(text).__name__}; call the tokenizer for a batch"
            )
        batch = self(
            text, add_special_tokens=add_special_tokens, max_length=max_length, truncation=truncation
        )
        return batch["input_ids"]

    def _encode_side(
        self,
        texts: str | Sequence[str],
        name: str,
        *,
        max_length: int | None,
        truncation: bool,
        padding: bool | str,
        pad_to_multiple_of: int | None,
        return_tensors: str | None,
        add_special_tokens: bool,
        mask: bool,
        pad_value: int | None = None,
    ) -> BatchEncoding:
        single = isinstance(texts, str)
        batch_texts = _check_texts([texts] if single else texts, name)
        ids = self._encode_batch(batch_texts)
        limit = max_length if max_length is not None else self.model_max_length
        if truncation:
            if limit is None:
                raise ValueError(
                    "truncation=True needs max_length= (or max_target_length= for targets), "
                    "or a tokenizer with model_max_length set"
                )
            if limit < (1 if add_special_tokens else 0):
                raise ValueError(
                    f"max_length={limit} is too small: sequences need at least room for the eos token"
                )
        ids = self._add_eos_and_truncate(ids, limit if truncation else None, add_special_tokens)

        width = padded_width(
            [len(row) for row in ids],
            padding=padding,
            max_length=limit,
            pad_to_multiple_of=pad_to_multiple_of,
            name=name,
        )
        fill = self.pad_token_id if pad_value is None else pad_value
        batch = BatchEncoding()
        if width is not None and return_tensors is not None:
            # Fast path for big batches: pad straight into arrays.
            array, real = pad_to_array(ids, value=fill, width=width, side=self.padding_side)
            batch["input_ids"] = to_tensor(array, return_tensors, name=name)
            if mask:
                batch["attention_mask"] = to_tensor(real, return_tensors, name=name)
            return batch
        masks = [[1] * len(row) for row in ids] if mask else None
        if width is not None:
            ids = pad_rows(ids, value=fill, width=width, side=self.padding_side)
            if masks is not None:
                masks = pad_rows(masks, value=0, width=width, side=self.padding_side)
        batch["input_ids"] = ids
        if masks is not None:
            batch["attention_mask"] = masks
        for key, rows in batch.items():
            if single and return_tensors is None:
                batch[key] = rows[0]
            else:
                batch[key] = to_tensor(rows, return_tensors, name=name)
        return batch

    def _add_eos_and_truncate(
        self, ids: list[list[int]], limit: int | None, add_special_tokens: bool
    ) -> list[list[int]]:
        if add_special_tokens:
            eos = [self.eos_token_id]
            if limit is None:
                return [row + eos for row in ids]
            keep = limit - 1
            return [(row[:keep] if len(row) > keep else row) + eos for row in ids]
        if limit is None:
            return ids
        return [row[:limit] for row in ids]

    def pad(
        self,
        features: Sequence[Any] | dict[str, Any],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        *,
        return_attention_mask: bool = True,
        label_pad_token_id: int = -100,
    ) -> BatchEncoding:
        """Pad a list of encoded examples (dicts of id lists), or one dict of lists, into a batch.

        `input_ids` pad with the pad id, `attention_mask` with 0, `labels` with -100. Padding never truncates.
        """
        if padding_strategy(padding) == "max_length" and max_length is None:
            max_length = self.model_max_length
        return pad_features(
            features,
            pad_token_id=self.pad_token_id,
            label_pad_token_id=label_pad_token_id,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=self.padding_side,
            return_tensors=return_tensors,
            return_attention_mask=return_attention_mask,
        )

    # ---- decoding ------------------------------------------------------------------------------------------
    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True, **_: Any) -> list[str]:
        """Text of each row of `sequences` (lists, a numpy array or a tensor).

        Negative ids (the -100 of padded labels) are always dropped, so labels decode without preprocessing.
        With `skip_special_tokens`, pad/unk/bos/eos are dropped too; otherwise they appear as their tokens.
        Nothing stops early: every remaining id of the row is decoded.
        """
        rows = as_int_lists(sequences)
        for i, row in enumerate(rows):
            if row and isinstance(row[0], (list, tuple)):
                raise ValueError(f"batch_decode expects a 2-D batch of ids; row {i} is nested deeper")
        rows = [[t for t in row if t >= 0] for row in rows]
        self._check_in_vocab(rows)
        if skip_special_tokens:
            skip = self._skip_ids
            return self._decode_batch([[t for t in row if t not in skip] for row in rows])
        return self._decode_with_special_tokens(rows)

    def decode(self, token_ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        """Text of one sequence of ids (a list, a 1-D array or a 1-D tensor)."""
        if isinstance(token_ids, int) or getattr(token_ids, "ndim", None) == 0:
            token_ids = [int(token_ids)]
        if getattr(token_ids, "ndim", 1) != 1:
            raise ValueError(f"decode takes one sequence (1-D), got {token_ids.ndim}-D; use batch_decode")
        return self.batch_decode([token_ids], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    def _decode_with_special_tokens(self, rows: list[list[int]]) -> list[str]:
        # Decode each run of ordinary ids as text and write special ids as their tokens, e.g. "a house</s><pad>".
        runs: list[list[int]] = []
        layout: list[list[int | str]] = []  # per row: index into runs, or a special token string
        special = self._skip_ids
        for row in rows:
            parts: list[int | str] = []
            current: list[int] = []
            for t in row:
                if t in special:
                    if current:
                        parts.append(len(runs))
                        runs.append(current)
                        current = []
                    parts.append(self._id_to_token(t))
                else:
                    current.append(t)
            if current:
                parts.append(len(runs))
                runs.append(current)
            layout.append(parts)
        texts = self._decode_batch(runs) if runs else []
        return ["".join(texts[p] if isinstance(p, int) else p for p in parts) for parts in layout]

    def _check_in_vocab(self, rows: list[list[int]]) -> None:
        top = max((max(row) for row in rows if row), default=-1)
        if top >= self.vocab_size:
            raise ValueError(
                f"id {top} is outside the vocabulary (size {self.vocab_size}); were these ids made with another "
                "tokenizer, or by a model whose output layer is larger than the vocabulary?"
            )

    # ---- tokens <-> ids ------------------------------------------------------------------------------------
    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        if isinstance(ids, int):
            return self._id_to_token(ids)
        ids = as_int_lists([ids])[0]
        self._check_in_vocab([ids])
        return [self._id_to_token(i) for i in ids if not (skip_special_tokens and i in self._skip_ids)]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of tokens; a token outside the vocabulary maps to the unk id, as in Hugging Face."""

        def one(token: str) -> int:
            index = self._token_to_id(token)
            if index is None:
                if self.unk_token_id is None:
                    raise KeyError(
                        f"token {token!r} is not in the vocabulary and the tokenizer has no unk token"
                    )
                return self.unk_token_id
            return index

        return one(tokens) if isinstance(tokens, str) else [one(t) for t in tokens]

    # ---- saving and loading --------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path) -> list[str]:
        """Write the backend model file and tokenizer_config.json into `save_directory`; return the file paths."""
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"save_pretrained needs a directory, but {directory} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        model_file = self._save_model(directory)
        config = {
            "format_version": FORMAT_VERSION,
            "tokenizer_class": type(self).__name__,
            "backend": self.backend,
            "model_file": model_file,
            "special_tokens": self.special_tokens,
            "special_token_ids": {name: self._special_ids[name] for name in SPECIAL_TOKEN_NAMES},
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            **self._extra_config(),
        }
        config_path = directory / CONFIG_FILE
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [str(directory / model_file), str(config_path)]

    def _extra_config(self) -> dict[str, Any]:
        """Backend settings to keep in tokenizer_config.json (e.g. encoding threads)."""
        return {}

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> Tokenizer:
        """Load a tokenizer saved by `save_pretrained` (or a bare sentencepiece `.model` / `tokenizer.json`)."""
        from s2s.tokenization.loading import load_tokenizer

        tokenizer = load_tokenizer(path, **overrides)
        if not isinstance(tokenizer, cls):
            raise TypeError(
                f"{path} holds a {type(tokenizer).__name__}, not a {cls.__name__}; use load_tokenizer(path) "
                "or Tokenizer.from_pretrained(path) to load whichever backend it is"
            )
        return tokenizer


def _truncation_flag(truncation: bool | str) -> bool:
    if truncation in (True, "longest_first", "only_first"):
        return True
    if truncation in (False, None, "do_not_truncate"):
        return False
    raise ValueError(f"truncation={truncation!r} is not supported; use True or False")


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if not isinstance(texts, (list, tuple)):
        texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, expected str (missing text in the data?)")
    return texts if isinstance(texts, list) else list(texts)
