"""The Hugging Face `tokenizers` backend: a BPE trained here, or any `tokenizer.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as RustTokenizer

from s2s.tokenization.base import DEFAULT_SPECIAL_TOKENS, Tokenizer

MODEL_FILE = "tokenizer.json"


class HFTokenizer(Tokenizer):
    """A `Tokenizer` over a `tokenizers.Tokenizer` (Rust; batches are encoded in parallel).

    The tokenizer.json's own post-processor is not used: sources and targets get a single eos from this class,
    so a loaded tokenizer follows the project's contract too. Special tokens default to the project's
    (<pad>, <unk>, <s>, </s>); pass the model's own when loading another tokenizer.json (e.g. pad_token="[PAD]").
    """

    backend = "tokenizers"

    def __init__(
        self,
        tokenizer_object: RustTokenizer,
        *,
        pad_token: str | None = DEFAULT_SPECIAL_TOKENS["pad_token"],
        unk_token: str | None = DEFAULT_SPECIAL_TOKENS["unk_token"],
        bos_token: str | None = DEFAULT_SPECIAL_TOKENS["bos_token"],
        eos_token: str | None = DEFAULT_SPECIAL_TOKENS["eos_token"],
        model_max_length: int | None = None,
        padding_side: str = "right",
    ) -> None:
        self._tok = tokenizer_object
        # Truncation/padding configured inside a loaded tokenizer.json would fight ours; ours are explicit.
        self._tok.no_truncation()
        self._tok.no_padding()
        special = {
            "pad_token": pad_token,
            "unk_token": unk_token,
            "bos_token": bos_token,
            "eos_token": eos_token,
        }
        # An absent optional token (bos, unk) is dropped rather than failing; pad and eos are checked by the base.
        for name in ("unk_token", "bos_token"):
            if special[name] is not None and self._tok.token_to_id(special[name]) is None:
                special[name] = None
        super().__init__(special, model_max_length=model_max_length, padding_side=padding_side)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> HFTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            rust = RustTokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(
                f"{path} is not a valid tokenizers tokenizer.json (corrupt or another format): {err}"
            ) from err
        return cls(rust, **kwargs)

    # ---- backend hooks -------------------------------------------------------------------------------------
    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [encoding.ids for encoding in self._tok.encode_batch_fast(texts, add_special_tokens=False)]

    def _decode_batch(self, ids: list[list[int]]) -> list[str]:
        if not ids:
            return []
        return self._tok.decode_batch(ids, skip_special_tokens=False)

    def _token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _id_to_token(self, index: int) -> str:
        token = self._tok.id_to_token(index)
        if token is None:
            raise ValueError(f"id {index} is outside the vocabulary (size {self.vocab_size})")
        return token

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend_tokenizer(self) -> RustTokenizer:
        """The underlying `tokenizers.Tokenizer` (same name as on Hugging Face fast tokenizers)."""
        return self._tok

    # ---- saving --------------------------------------------------------------------------------------------
    def _save_model(self, directory: Path) -> str:
        self._tok.save(str(directory / MODEL_FILE))
        return MODEL_FILE

    @classmethod
    def _from_saved(cls, model_path: Path, config: dict[str, Any]) -> HFTokenizer:
        tokens = config.get("special_tokens", DEFAULT_SPECIAL_TOKENS)
        return cls.from_file(
            model_path,
            **{name: tokens.get(name) for name in DEFAULT_SPECIAL_TOKENS},
            model_max_length=config.get("model_max_length"),
            padding_side=config.get("padding_side", "right"),
        )
