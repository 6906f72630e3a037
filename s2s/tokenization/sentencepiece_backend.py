"""The sentencepiece backend (unigram or BPE models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sentencepiece as spm

from s2s.tokenization.base import Tokenizer

MODEL_FILE = "sentencepiece.model"


class SentencePieceTokenizer(Tokenizer):
    """A `Tokenizer` over a sentencepiece model; batches are encoded and decoded by sentencepiece's threads.

    Special tokens are read from the model (project models: pad=0, unk=1, bos=2, eos=3).
    """

    backend = "sentencepiece"

    def __init__(
        self,
        model_proto: bytes,
        *,
        model_max_length: int | None = None,
        padding_side: str = "right",
        num_threads: int | None = None,
    ) -> None:
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.num_threads = num_threads
        """Threads for batch encoding/decoding; None lets sentencepiece use every core."""

        def piece(index: int) -> str | None:
            return None if index < 0 else self._sp.id_to_piece(index)

        special = {
            "pad_token": piece(self._sp.pad_id()),
            "unk_token": piece(self._sp.unk_id()),
            "bos_token": piece(self._sp.bos_id()),
            "eos_token": piece(self._sp.eos_id()),
        }
        super().__init__(special, model_max_length=model_max_length, padding_side=padding_side)

    @classmethod
    def from_model_file(cls, path: str | Path, **kwargs: Any) -> SentencePieceTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sentencepiece model file {path} does not exist")
        try:
            return cls(path.read_bytes(), **kwargs)
        except RuntimeError as err:
            raise ValueError(
                f"{path} is not a valid sentencepiece model (corrupt or another format): {err}"
            ) from err

    # ---- backend hooks -------------------------------------------------------------------------------------
    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self._sp.encode(texts, out_type=int, num_threads=self._threads())

    def _decode_batch(self, ids: list[list[int]]) -> list[str]:
        if not ids:
            return []
        return self._sp.decode(ids, num_threads=self._threads())

    def _threads(self) -> int:
        return -1 if self.num_threads is None else self.num_threads

    def _token_to_id(self, token: str) -> int | None:
        index = self._sp.piece_to_id(token)
        # piece_to_id answers unk for unknown pieces; only the unk piece itself may map to unk.
        if index == self._sp.unk_id() and token != self._sp.id_to_piece(index):
            return None
        return index

    def _id_to_token(self, index: int) -> str:
        if not 0 <= index < self.vocab_size:
            raise ValueError(f"id {index} is outside the vocabulary (size {self.vocab_size})")
        return self._sp.id_to_piece(index)

    def tokenize(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def get_vocab(self) -> dict[str, int]:
        return {self._sp.id_to_piece(i): i for i in range(self.vocab_size)}

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def sp_model(self) -> spm.SentencePieceProcessor:
        """The underlying `SentencePieceProcessor`, for sampling or n-best encodings."""
        return self._sp

    # ---- saving --------------------------------------------------------------------------------------------
    def _save_model(self, directory: Path) -> str:
        (directory / MODEL_FILE).write_bytes(self._proto)
        return MODEL_FILE

    def _extra_config(self) -> dict[str, Any]:
        return {"num_threads": self.num_threads}

    @classmethod
    def _from_saved(cls, model_path: Path, config: dict[str, Any]) -> SentencePieceTokenizer:
        return cls.from_model_file(
            model_path,
            model_max_length=config.get("model_max_length"),
            padding_side=config.get("padding_side", "right"),
            num_threads=config.get("num_threads"),
        )

    # Pickled for DataLoader workers by the serialized model, not the C++ object.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_sp"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
