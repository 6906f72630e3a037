"""Train a tokenizer from texts or files: sentencepiece (unigram/BPE) or a `tokenizers` BPE.

Both backends get the project's special ids (pad=0, unk=1, bos=2, eos=3). For translation, train one joint
vocabulary on both sides (`train_joint_tokenizer(pairs, ...)`), so source and target share embeddings.
"""

from __future__ import annotations

import io
import itertools
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from s2s.tokenization.base import DEFAULT_SPECIAL_TOKENS, Tokenizer

SPECIAL_ORDER = ("pad_token", "unk_token", "bos_token", "eos_token")  # ids 0, 1, 2, 3
TextsOrFiles = str | os.PathLike | Iterable[str | os.PathLike]


def train_tokenizer(
    texts_or_files: TextsOrFiles,
    *,
    vocab_size: int,
    backend: str = "sentencepiece",
    model_type: str | None = None,
    character_coverage: float = 1.0,
    byte_fallback: bool = False,
    input_sentence_size: int | None = None,
    num_threads: int | None = None,
    model_max_length: int | None = None,
    min_frequency: int = 2,
    pre_tokenizer: str = "byte_level",
    hard_vocab_limit: bool = True,
    user_defined_symbols: list[str] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    verbose: bool = False,
) -> Tokenizer:
    """Train a tokenizer and return it (save it with `save_pretrained`).

    texts_or_files: an iterable of sentences (`str`) and/or files (`pathlib.Path`, one sentence per line); a
        single `str`/`Path` names one file. Strings inside an iterable are always texts, never paths.
    vocab_size: size of the vocabulary, special tokens included.
    backend: "sentencepiece" or "bpe" (the Hugging Face `tokenizers` BPE; "tokenizers" is accepted too).
    model_type: sentencepiece model, "unigram" (default) or "bpe"; the "bpe" backend is always BPE.
    character_coverage: sentencepiece; 1.0 keeps every character, ~0.9995 suits large CJK alphabets.
    byte_fallback: sentencepiece; rare characters become byte pieces instead of <unk>.
    input_sentence_size: cap on the sentences held in memory; sentencepiece samples that many at random,
        the BPE backend reads the first that many.
    num_threads: sentencepiece training threads (default: every core); also used when encoding batches.
    model_max_length: default limit for `truncation=True`, saved with the tokenizer.
    min_frequency: BPE backend; a pair must occur this often to be merged.
    pre_tokenizer: BPE backend; "byte_level" (lossless, never <unk>) or "metaspace" (sentencepiece-like pieces).
    hard_vocab_limit: sentencepiece; False lets a tiny corpus give a smaller vocabulary instead of an error.
    user_defined_symbols: pieces kept whole (e.g. language tags "<2de>").
    trainer_kwargs: any other `SentencePieceTrainer.train` option (e.g. `max_sentence_length`).
    """
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_ORDER):
        raise ValueError(
            f"vocab_size must be an int larger than the {len(SPECIAL_ORDER)} special tokens, got {vocab_size!r}"
        )
    if input_sentence_size is not None and input_sentence_size <= 0:
        raise ValueError(f"input_sentence_size must be positive (or None for all), got {input_sentence_size}")
    if backend not in ("sentencepiece", "bpe", "tokenizers"):
        raise ValueError(f"backend must be 'sentencepiece' or 'bpe', got {backend!r}")
    sentences = _Guarded(_sentences(texts_or_files))
    if backend == "sentencepiece":
        return sentences.run(
            _train_sentencepiece,
            sentences,
            vocab_size=vocab_size,
            model_type=model_type or "unigram",
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            input_sentence_size=input_sentence_size,
            num_threads=num_threads,
            model_max_length=model_max_length,
            hard_vocab_limit=hard_vocab_limit,
            user_defined_symbols=user_defined_symbols,
            trainer_kwargs=trainer_kwargs,
            verbose=verbose,
        )
    # backend is "bpe" (the tokenizers library)
    if model_type not in (None, "bpe"):
        raise ValueError(
            f"backend={backend!r} trains BPE only; model_type={model_type!r} needs backend='sentencepiece'"
        )
    if byte_fallback:
        raise ValueError(
            "byte_fallback is a sentencepiece option; for the BPE backend use pre_tokenizer='byte_level', which never gives <unk>"
        )
    if trainer_kwargs:
        raise ValueError(f"trainer_kwargs are sentencepiece options; backend={backend!r} does not read them")
    return sentences.run(
        _train_bpe,
        itertools.islice(sentences, input_sentence_size),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        pre_tokenizer=pre_tokenizer,
        model_max_length=model_max_length,
        user_defined_symbols=user_defined_symbols,
        verbose=verbose,
    )


def train_joint_tokenizer(pairs: Iterable[tuple[str, str]], *, vocab_size: int, **kwargs: Any) -> Tokenizer:
    """Train one vocabulary on both sides of translation pairs `(source, target)`; see `train_tokenizer`."""

    def both_sides() -> Iterator[str]:
        for i, pair in enumerate(pairs):
            if isinstance(pair, str) or len(pair) != 2:
                raise ValueError(f"pairs[{i}] must be a (source, target) pair, got {pair!r:.80}")
            yield from pair

    return train_tokenizer(both_sides(), vocab_size=vocab_size, **kwargs)


class _Guarded(Iterator[str]):
    """Iterator that keeps an error raised while reading texts and re-raises it after training, because the
    backends' native trainers would otherwise swallow it or report it as their own failure."""

    def __init__(self, items: Iterator[str]) -> None:
        self._items = items
        self._error: BaseException | None = None

    def __next__(self) -> str:
        try:
            return next(self._items)
        except StopIteration:
            raise
        except Exception as err:
            self._error = err
            raise StopIteration from err

    def run(self, train: Any, sentences: Iterator[str], **options: Any) -> Tokenizer:
        try:
            result = train(sentences, **options)
        except Exception:
            if self._error is not None:
                raise self._error from None
            raise
        if self._error is not None:
            raise self._error
        return result


def _sentences(texts_or_files: TextsOrFiles) -> Iterator[str]:
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [Path(texts_or_files)]
    items = iter(texts_or_files)
    first = next(items, None)
    if first is None:
        raise ValueError("no texts or files to train the tokenizer on")
    if isinstance(first, str) and len(first) < 1024 and os.path.isfile(first):
        warnings.warn(
            f"training on the text {first!r}, which is also the name of a file; pass pathlib.Path objects "
            "to read files",
            stacklevel=3,
        )
    return _expand(itertools.chain([first], items))


def _expand(items: Iterable[str | os.PathLike]) -> Iterator[str]:
    n = 0
    for i, item in enumerate(items):
        if isinstance(item, str):
            n += 1
            yield item
        elif isinstance(item, os.PathLike):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"training file {path} does not exist")
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    line = line.rstrip("\r\n")
                    if line:
                        n += 1
                        yield line
        else:
            raise TypeError(
                f"texts_or_files[{i}] is {type(item).__name__}; expected a str text or a pathlib.Path"
            )
    if n == 0:
        raise ValueError("the texts/files given to train_tokenizer hold no non-empty sentence")


def _train_sentencepiece(
    sentences: Iterator[str],
    *,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    byte_fallback: bool,
    input_sentence_size: int | None,
    num_threads: int | None,
    model_max_length: int | None,
    hard_vocab_limit: bool,
    user_defined_symbols: list[str] | None,
    trainer_kwargs: dict[str, Any] | None,
    verbose: bool,
) -> Tokenizer:
    import sentencepiece as spm

    from s2s.tokenization.sentencepiece_backend import SentencePieceTokenizer

    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    model = io.BytesIO()
    options: dict[str, Any] = dict(
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        input_sentence_size=input_sentence_size or 0,
        shuffle_input_sentence=True,
        num_threads=num_threads or os.cpu_count() or 1,
        hard_vocab_limit=hard_vocab_limit,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece=DEFAULT_SPECIAL_TOKENS["pad_token"],
        unk_piece=DEFAULT_SPECIAL_TOKENS["unk_token"],
        bos_piece=DEFAULT_SPECIAL_TOKENS["bos_token"],
        eos_piece=DEFAULT_SPECIAL_TOKENS["eos_token"],
        minloglevel=0 if verbose else 2,
    )
    if user_defined_symbols:
        options["user_defined_symbols"] = list(user_defined_symbols)
    options.update(trainer_kwargs or {})
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_writer=model, **options)
    except RuntimeError as err:
        hint = " (or pass hard_vocab_limit=False)" if "Vocabulary size" in str(err) else ""
        raise ValueError(f"sentencepiece training failed: {err}{hint}") from err
    return SentencePieceTokenizer(
        model.getvalue(), model_max_length=model_max_length, num_threads=num_threads
    )


def _train_bpe(
    sentences: Iterator[str],
    *,
    vocab_size: int,
    min_frequency: int,
    pre_tokenizer: str,
    model_max_length: int | None,
    user_defined_symbols: list[str] | None,
    verbose: bool,
) -> Tokenizer:
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from s2s.tokenization.tokenizers_backend import HFTokenizer

    specials = [DEFAULT_SPECIAL_TOKENS[name] for name in SPECIAL_ORDER]
    if pre_tokenizer == "byte_level":
        # Every byte is in the alphabet, so any text round-trips exactly and <unk> never appears.
        rust = RustTokenizer(models.BPE(unk_token=DEFAULT_SPECIAL_TOKENS["unk_token"]))
        rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        rust.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif pre_tokenizer == "metaspace":
        rust = RustTokenizer(models.BPE(unk_token=DEFAULT_SPECIAL_TOKENS["unk_token"]))
        rust.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        rust.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        alphabet = []
    else:
        raise ValueError(f"pre_tokenizer must be 'byte_level' or 'metaspace', got {pre_tokenizer!r}")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials + list(user_defined_symbols or []),
        initial_alphabet=alphabet,
        show_progress=verbose,
    )
    rust.train_from_iterator(sentences, trainer=trainer)
    for index, token in enumerate(specials):
        assert rust.token_to_id(token) == index, f"{token} should have id {index}"
    return HFTokenizer(rust, model_max_length=model_max_length)
