"""`BatchEncoding`: the dict a tokenizer or a collator returns, with attribute access as in Hugging Face."""

from __future__ import annotations

from typing import Any


class BatchEncoding(dict):
    """A dict of model inputs (`input_ids`, `attention_mask`, `labels`, ...) that also allows
    `batch.input_ids`. Being a plain dict subclass, it pickles, and `model(**batch)` works."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key {name!r}; keys: {sorted(self)}") from None

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor to `device` (other values are kept); returns self, as Hugging Face does."""
        for key, value in self.items():
            if hasattr(value, "to") and hasattr(value, "device"):
                self[key] = value.to(device)
        return self
