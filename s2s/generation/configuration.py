"""`GenerationConfig`: every decoding option in one validated, JSON-serialisable object.

Names and defaults follow Hugging Face `GenerationConfig` so that `model.generate(num_beams=4, ...)` reads the
same; `max_length_a` / `max_length_b` add fairseq's source-relative length limit. A bad value or a contradiction
raises `ValueError` at construction (and at `update`), naming the field and the fix, instead of failing (or
silently doing something else) in the middle of an evaluation.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from s2s.json_files import read_json_object

CONFIG_NAME = "generation_config.json"

# Keys that Hugging Face writes into generation_config.json as metadata; they carry no decoding option.
_METADATA_KEYS = {"transformers_version", "_from_model_config", "_commit_hash"}


@dataclass(init=False)
class GenerationConfig:
    """Decoding options. Construct with keywords: `GenerationConfig(num_beams=4, max_new_tokens=64)`.

    Lengths: HF semantics. `max_length` / `min_length` count the whole decoder sequence including the decoder
    start token; `max_new_tokens` / `min_new_tokens` count generated tokens (eos included). When several limits
    are given, each example stops at the smallest of them.
    """

    max_length: int | None = None
    """Total decoder length limit (decoder start token included). None: 20, unless `max_new_tokens` or
    `max_length_a`/`max_length_b` give a limit."""
    max_new_tokens: int | None = None
    """Limit on generated tokens (eos included), the start token not counted."""
    min_length: int = 0
    """eos is forbidden while the decoder sequence (start token included) is shorter than this."""
    min_new_tokens: int | None = None
    """eos is forbidden while fewer than this many tokens were generated."""
    max_length_a: float = 0.0
    """fairseq-style limit per example: at most `int(max_length_a * src_len + max_length_b)` new tokens, where
    src_len counts the non-padding source tokens. Active when `max_length_b` is set."""
    max_length_b: int | None = None
    """See `max_length_a`."""
    num_beams: int = 1
    """1: greedy (or sampling with `do_sample`); > 1: beam search."""
    length_penalty: float = 1.0
    """Beam hypotheses are ranked by sum(log-probs) / len**length_penalty, len = generated tokens incl. eos."""
    early_stopping: bool | str = False
    """True: an example is done as soon as `num_beams` hypotheses are finished. False: Hugging Face's heuristic
    (done when no running beam, scored at its current length, beats the worst finished one). "never": done only
    when no running beam can beat the worst finished one at any allowed length (exact beam search)."""
    num_return_sequences: int = 1
    """Sequences returned per source (beam search: the best ones; sampling: independent samples)."""
    no_repeat_ngram_size: int = 0
    """If > 0, no n-gram of this size occurs twice in a decoder sequence (start token included)."""
    repetition_penalty: float = 1.0
    """CTRL penalty on tokens already in the decoder sequence: negative scores * p, positive scores / p."""
    bad_words_ids: list[list[int]] | None = None
    """Token sequences that must never be generated; a one-token entry bans that token everywhere."""
    forced_bos_token_id: int | None = None
    """Token forced as the first generated token (e.g. a target-language tag)."""
    forced_eos_token_id: int | None = None
    """Token forced as the last token when the length limit is reached."""
    renormalize_logits: bool = False
    """Beam search: normalise the log-probabilities again after the processors (banned words, forced tokens,
    min length) changed them, so every step's scores sum to one. Marian checkpoints decode this way."""
    do_sample: bool = False
    """Sample from the (processed) distribution instead of taking the best token. Needs `num_beams == 1`."""
    temperature: float = 1.0
    """Sampling only: logits are divided by this."""
    top_k: int = 50
    """Sampling only: keep the k most likely tokens (0 disables)."""
    top_p: float = 1.0
    """Sampling only: keep the smallest set of most likely tokens whose probability reaches top_p."""
    decoder_start_token_id: int | None = None
    """First decoder token; falls back to `bos_token_id`."""
    pad_token_id: int | None = None
    """Fills finished sequences and the end of shorter outputs (never -100)."""
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    """Token (or tokens) that end a sequence."""
    return_dict_in_generate: bool = False
    """Return a `GenerateOutput` instead of a bare tensor of ids."""
    output_scores: bool = False
    """With `return_dict_in_generate`, also return `sequences_scores` (length-normalised, as for beams)."""

    def __init__(self, **kwargs: Any) -> None:
        known = {f.name: f for f in fields(self)}
        unknown = [key for key in kwargs if key not in known]
        if unknown:
            raise ValueError(_unknown_message(unknown, known))
        for name, f in known.items():
            if name in kwargs:
                value = kwargs[name]
            elif f.default is not MISSING:
                value = f.default
            else:  # pragma: no cover - every field has a default
                value = f.default_factory()  # type: ignore[misc]
            setattr(self, name, copy.deepcopy(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError naming the first bad field (or contradiction) and how to fix it."""
        _check_int(self.max_length, "max_length", minimum=1, optional=True)
        _check_int(self.max_new_tokens, "max_new_tokens", minimum=1, optional=True)
        _check_int(self.min_length, "min_length", minimum=0)
        _check_int(self.min_new_tokens, "min_new_tokens", minimum=0, optional=True)
        _check_int(self.max_length_b, "max_length_b", minimum=0, optional=True)
        _check_float(self.max_length_a, "max_length_a")
        if self.max_length_a < 0:
            raise ValueError(f"max_length_a must be >= 0, got {self.max_length_a}")
        if self.max_length_a > 0 and self.max_length_b is None:
            raise ValueError(
                "max_length_a is set but max_length_b is None; set max_length_b (e.g. 0 or 10) to use the "
                "limit a * src_len + b"
            )
        _check_int(self.num_beams, "num_beams", minimum=1)
        _check_float(self.length_penalty, "length_penalty")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        _check_int(self.num_return_sequences, "num_return_sequences", minimum=1)
        _check_int(self.no_repeat_ngram_size, "no_repeat_ngram_size", minimum=0)
        _check_float(self.repetition_penalty, "repetition_penalty")
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1.0 disables it), got {self.repetition_penalty}"
            )
        self._validate_bad_words()
        for name in (
            "forced_bos_token_id",
            "forced_eos_token_id",
            "decoder_start_token_id",
            "pad_token_id",
            "bos_token_id",
        ):
            _check_int(getattr(self, name), name, minimum=0, optional=True)
        self._validate_eos()
        for name in ("do_sample", "return_dict_in_generate", "output_scores", "renormalize_logits"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _check_float(self.temperature, "temperature")
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0, got {self.temperature}; for deterministic decoding use "
                "do_sample=False instead of temperature 0"
            )
        _check_int(self.top_k, "top_k", minimum=0)
        _check_float(self.top_p, "top_p")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1.0 disables it), got {self.top_p}")
        self._validate_combinations()

    def _validate_bad_words(self) -> None:
        if self.bad_words_ids is None:
            return
        ok = isinstance(self.bad_words_ids, list) and all(
            isinstance(seq, list)
            and seq
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in seq)
            for seq in self.bad_words_ids
        )
        if not ok:
            raise ValueError(
                "bad_words_ids must be a list of non-empty lists of token ids, e.g. [[5], [7, 8]], "
                f"got {self.bad_words_ids!r}"
            )

    def _validate_eos(self) -> None:
        eos = self.eos_token_id
        if isinstance(eos, list):
            if not eos:
                raise ValueError("eos_token_id is an empty list; give one id, a list of ids, or None")
            for token in eos:
                _check_int(token, "eos_token_id", minimum=0)
        else:
            _check_int(eos, "eos_token_id", minimum=0, optional=True)

    def _validate_combinations(self) -> None:
        both = self.max_new_tokens is not None and self.min_new_tokens is not None
        if both and self.min_new_tokens > self.max_new_tokens:  # type: ignore[operator]
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) > max_new_tokens ({self.max_new_tokens}); "
                "lower min_new_tokens or raise max_new_tokens"
            )
        if self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(
                f"min_length ({self.min_length}) > max_length ({self.max_length}); "
                "lower min_length or raise max_length"
            )
        if self.do_sample and self.num_beams > 1:
            raise ValueError(
                f"do_sample=True with num_beams={self.num_beams} (beam sampling) is not supported; "
                "use num_beams=1 to sample or do_sample=False for beam search"
            )
        if not self.do_sample and self.num_beams == 1 and self.num_return_sequences > 1:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs beam search or sampling: greedy "
                "decoding gives one sequence; set num_beams >= num_return_sequences or do_sample=True"
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) > num_beams ({self.num_beams}): beam "
                "search keeps only num_beams hypotheses; raise num_beams or lower num_return_sequences"
            )
        if self.output_scores and not self.return_dict_in_generate:
            raise ValueError(
                "output_scores=True needs return_dict_in_generate=True (scores come in a GenerateOutput)"
            )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> GenerationConfig:
        """Build from a dict (e.g. a loaded JSON); Hugging Face metadata keys are ignored."""
        clean = {k: v for k, v in data.items() if k not in _METADATA_KEYS}
        clean.update(overrides)
        return cls(**clean)

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write `generation_config.json` into `save_directory` (created if needed); returns the file path."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(self.to_json_string())
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> GenerationConfig:
        """Load from a directory holding `generation_config.json`, or from a JSON file."""
        path = Path(path)
        file = path / CONFIG_NAME if path.is_dir() else path
        data = read_json_object(
            file,
            missing=f"no generation config at {file}; pass a directory containing {CONFIG_NAME} or a JSON file "
            "written by GenerationConfig.save_pretrained",
            what="a JSON object of generation options",
        )
        try:
            return cls.from_dict(data, **overrides)
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from err

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the known options among `kwargs`, validate, and return the others (unused) untouched.

        On a validation error nothing is changed."""
        known = {f.name for f in fields(self)}
        used = {k: v for k, v in kwargs.items() if k in known}
        candidate = self.to_dict()
        candidate.update(used)
        type(self)(**candidate)  # raises before anything is changed
        for key, value in used.items():
            setattr(self, key, copy.deepcopy(value))
        return {k: v for k, v in kwargs.items() if k not in known}

    def copy(self) -> GenerationConfig:
        return type(self)(**self.to_dict())

    # ------------------------------------------------------------------ derived values
    @property
    def eos_token_ids(self) -> list[int]:
        """eos ids as a list (empty when none)."""
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, list) else [self.eos_token_id]

    @property
    def is_beam_search(self) -> bool:
        return self.num_beams > 1


def _unknown_message(unknown: list[str], known: dict[str, Any]) -> str:
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown generation option(s) {', '.join(parts)}; known options: {', '.join(sorted(known))}"


def _check_int(value: Any, name: str, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_float(value: Any, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
