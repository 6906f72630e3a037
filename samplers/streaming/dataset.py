"""``StreamingTokenBatches``: token-budget batches streamed from sharded files, for corpora larger than memory.

An epoch on one rank: the shards in an order shuffled by ``(seed, epoch)`` (the same on every rank), this
rank's share of them (every ``num_replicas``-th from ``rank``), read one after the other; their examples go
into a shuffle buffer of ``buffer_size`` examples, which once full is tokenized, cut into token-budget batches
(``buffer_batches``: look-ahead windows sorted by length, Marian's maxi-batches) and emitted in shuffled order,
then refilled. Everything random is drawn from ``(seed, epoch, rank, buffer)``, so an epoch is the same on
every run.

Why a buffer that fills and drains rather than one that swaps an example in for each out (tf.data's shuffle):
the position at a buffer's start, a shard and a place in it, is all a resume needs. ``state_dict()`` saves that
position, how many of the buffer's batches were handed out and the buffer's record (every line's lengths,
``buffer_record``); ``load_state_dict`` re-reads the buffer's lines from there (a ``seek`` in a plain file, the
current shard alone for gzip), plans its batches from the record and continues after the handed-out ones,
parsing and tokenizing only their examples: exactly the batches the uninterrupted epoch would still yield,
without reading the shards before, and at a cost that hardly grows with the buffer (so windows can be as large
as large token budgets need). A swapping buffer holds examples from anywhere before, so its resume would need
them saved or re-read.

Every example of an epoch is yielded once on exactly one rank. Ranks may get different numbers of batches
(their shards differ); a trainer that reads the stream epoch after epoch until ``max_steps`` (as the s2s
Trainer does) keeps the ranks in step regardless.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from samplers.sharding import check_replicas
from samplers.streaming.buffer_batches import buffer_batches
from samplers.streaming.buffer_record import decode_buffer, encode_buffer, line_layout
from samplers.streaming.shard_lines import Shard, shard_paths

logger = logging.getLogger(__name__)

AUTO_WINDOW_MIN = 50_000  # the automatic window never goes below this many examples
AUTO_WINDOW_PER_TOKEN = 12  # ... and otherwise holds this many examples per token of the batch budget
WINDOW_BATCHES_HINT = 300  # batches a window should make: fewer are logged once with the size that would
_TOKENIZE_CHUNK = 10_000  # examples per tokenizer call while a buffer fills: calls this large cost no more


@dataclass
class _Cursor:
    """Where this rank stands in an epoch: the start of the current buffer (``shard``, an index into this
    rank's shard list, and ``position`` in it, None for its start), the buffer's number, how many of its
    batches were handed out, the too-long examples skipped before the buffer, and, in the middle of a
    buffer, its ``record`` (``buffer_record``: every line's lengths), from which a resume plans the buffer's
    batches without tokenizing it again."""

    shard: int = 0
    position: dict[str, Any] | None = None
    buffer: int = 0
    batches: int = 0
    skipped: int = 0
    record: dict[str, Any] | None = None


class _Filled(NamedTuple):
    """One buffer, ready to hand out: its batches (positions among its kept examples), a function giving
    batch ``j``'s examples, the position after its last example, the too-long examples it left out, and its
    record for ``state_dict``."""

    batches: list[np.ndarray]
    examples_of: Callable[[int], list[Any]]
    end: tuple[int, dict[str, Any]]
    skipped: int
    record: dict[str, Any]


def automatic_window_size(max_tokens: int) -> int:
    """The look-ahead window for batches of `max_tokens`: padding falls with the number of batches a window
    is cut into, and a window of a fixed size makes fewer of them as the budget grows. On a 5M-pair WMT-like
    corpus, 50,000 examples made 160 batches of 16,384 tokens and padded 7.5% of them; 200,000 (about 12 a
    budget token) made 650 and padded 3.5%, while 50,000 was already enough at 4,096-8,192 tokens (0.967 /
    0.950 efficiency). Memory holds one buffer, its ids packed at 4 bytes a token: 200,000 WMT-like pairs
    take about 50 MB."""
    return max(AUTO_WINDOW_MIN, AUTO_WINDOW_PER_TOKEN * max_tokens)


class StreamingTokenBatches(IterableDataset):
    """Yields batches (lists of tokenized examples) of at most ``max_tokens`` padded tokens each, streamed
    from ``shards``.

    Args:
        shards: the shard files (a path, or a tuple of paths for parallel files), at least ``num_replicas``.
        read_shard: ``read_shard(shard) -> iterable of examples``. With a ``read_from(shard, position)``
            method yielding ``(example, position)`` as ``ShardLines`` does, a resume seeks to the saved
            position; otherwise it reads the current shard again and skips the examples consumed.
        tokenize: ``tokenize(example) -> dict`` of token id lists (None: the examples are already tokenized).
        batch_tokenize: instead of ``tokenize``, ``batch_tokenize(examples) -> list of dicts`` called on up to
            10,000 examples at a time: a tokenizer's batch call costs less per example (the project's
            sentencepiece tokenizer: about a third). It must tokenize each example as it would alone (no
            padding to the call's longest): a resume tokenizes only the examples still to come.
        max_tokens: the padded-token budget of a batch: ``batch size x max over the batch of max(source,
            target length)``, the larger of its two padded tensors.
        window_size: examples sorted by length together. Larger windows pad less, the more so the larger
            the batches: efficiency follows the number of batches a window makes (see bench/README.md).
            None (the default) sizes it from the budget, ``automatic_window_size(max_tokens)``: 12 examples
            a budget token, at least 50,000.
        buffer_size: examples shuffled together, at least ``window_size`` (a multiple fills whole windows);
            None (the default) is the window size;
            memory holds one buffer (its ids packed, 4 bytes a token). A resume inside a buffer reads its
            lines again but parses and tokenizes only the examples still to come: its batches are planned
            from the lengths saved with the position (``state_dict()["record"]``, about 2 bytes a line).
        source_key / target_key: the features whose lengths make an example's cost (no ``target_key`` in
            an example counts as an empty target).
        skip_too_long: an example costlier than ``max_tokens`` raises a ``ValueError`` naming its file and
            line; with True it is left out, counted in ``num_skipped`` and logged at the end of the epoch.
        max_sentences / required_batch_size_multiple: as in ``TokenBudgetBatchSampler``.
        prefetch: read and tokenize the next buffer in a background thread while the current one's batches
            are used (memory then holds two buffers); the batches are the same either way. The wait it saves
            is the part of the tokenization that runs without Python's GIL.

    Must be read in the process that owns it (``DataLoader(num_workers=0)``): its position, what
    ``state_dict()`` saves, lives in the object that reads; a worker's copy would move on unseen.
    """

    yields_batches = True  # a DataLoader must not batch it again (batch_size=None)

    def __init__(
        self,
        shards: Sequence[Shard],
        *,
        read_shard: Callable[[Shard], Any],
        tokenize: Callable[[Any], dict[str, Any]] | None = None,
        batch_tokenize: Callable[[list[Any]], Sequence[dict[str, Any]]] | None = None,
        max_tokens: int,
        window_size: int | None = None,
        buffer_size: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        source_key: str = "input_ids",
        target_key: str = "labels",
        skip_too_long: bool = False,
        max_sentences: int | None = None,
        required_batch_size_multiple: int = 1,
        prefetch: bool = True,
    ) -> None:
        check_replicas(num_replicas, rank)
        if window_size is None and isinstance(max_tokens, int) and max_tokens > 0:
            window_size = automatic_window_size(max_tokens)
        if buffer_size is None:
            buffer_size = window_size
        for name, value in (
            ("max_tokens", max_tokens),
            ("window_size", window_size),
            ("buffer_size", buffer_size),
            ("required_batch_size_multiple", required_batch_size_multiple),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if buffer_size < window_size:
            raise ValueError(
                f"buffer_size={buffer_size} is smaller than window_size={window_size}: a window sorts examples "
                "of one buffer; raise buffer_size or lower window_size"
            )
        if max_sentences is not None and (not isinstance(max_sentences, int) or max_sentences < 1):
            raise ValueError(f"max_sentences must be a positive int or None, got {max_sentences!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.shards = list(shards)
        self._shards_digest = _digest(self.shards)  # state_dict() runs once per batch: hash the names once
        if len(self.shards) < num_replicas:
            raise ValueError(
                f"{len(self.shards)} shard(s) for {num_replicas} processes: every process reads whole shards, so "
                "split the corpus into at least as many shards as processes (more balance the work better)"
            )
        if tokenize is not None and batch_tokenize is not None:
            raise ValueError("pass tokenize (one example) or batch_tokenize (a buffer's examples), not both")
        self.read_shard, self.tokenize, self.batch_tokenize = read_shard, tokenize, batch_tokenize
        self.max_tokens, self.window_size, self.buffer_size = max_tokens, window_size, buffer_size
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.source_key, self.target_key = source_key, target_key
        self.skip_too_long = skip_too_long
        self.max_sentences, self.required_batch_size_multiple = max_sentences, required_batch_size_multiple
        self.prefetch = prefetch
        self._window_hint_given = False
        self.num_skipped = 0  # too-long examples left out, over every epoch read in this process
        self.epoch = 0
        self._cursor = _Cursor()
        self._pass_complete = False  # the last pass ran to the end: the next one starts the epoch over

    # ------------------------------------------------------------------------------------------ the order
    def rank_shards(self, epoch: int | None = None) -> list[Shard]:
        """This rank's shards in the order ``epoch`` (default: the current one) reads them."""
        epoch = self.epoch if epoch is None else epoch
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order[self.rank :: self.num_replicas]]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        if get_worker_info() is not None:
            raise RuntimeError(
                "StreamingTokenBatches was handed to a DataLoader worker: read it with num_workers=0, since "
                "its position (what state_dict() saves and a resume needs) lives in the reading object"
            )
        if self._pass_complete:
            self._cursor = _Cursor()
        self._pass_complete = False
        shards, cursor = self.rank_shards(), self._cursor
        start, buffer, skip, skipped = (
            (cursor.shard, cursor.position),
            cursor.buffer,
            cursor.batches,
            cursor.skipped,
        )
        # With prefetch, the next buffer is read and tokenized in a thread while this one's batches are
        # trained on, instead of the training loop waiting for it at every buffer boundary.
        pool = ThreadPoolExecutor(1, thread_name_prefix="stream-buffer") if self.prefetch else None
        try:
            if skip and cursor.record is not None:
                # Resumed inside a buffer: its batches planned from the saved lengths, only the examples
                # of the batches to come read and tokenized.
                filled, examples = self._refill(shards, cursor, pool)
            else:
                examples = self._examples(shards, cursor.shard, cursor.position)
                filled = self._fill(shards, examples, start, buffer)
            while filled is not None:
                upcoming = pool.submit(self._fill, shards, examples, filled.end, buffer + 1) if pool else None
                after = _Cursor(*filled.end, buffer=buffer + 1, batches=0, skipped=skipped + filled.skipped)
                for j in range(skip, len(filled.batches)):
                    # Set before yielding: state_dict() taken after receiving a batch resumes after it.
                    last = j + 1 == len(filled.batches)
                    self._cursor = (
                        after
                        if last
                        else _Cursor(
                            *start, buffer=buffer, batches=j + 1, skipped=skipped, record=filled.record
                        )
                    )
                    yield filled.examples_of(j)
                self._cursor = after
                start, buffer, skip, skipped = filled.end, buffer + 1, 0, skipped + filled.skipped
                filled = upcoming.result() if upcoming else self._fill(shards, examples, start, buffer)
        finally:
            if pool is not None:
                # A pass left early (max_steps reached) does not wait for a read-ahead it will not use.
                pool.shutdown(wait=False, cancel_futures=True)
        if skipped:
            logger.warning(
                "StreamingTokenBatches: epoch %d on rank %d left out %d example(s) longer than max_tokens=%d",
                self.epoch,
                self.rank,
                skipped,
                self.max_tokens,
            )
        self._pass_complete = True

    def _examples(
        self, shards: list[Shard], shard: int, position: dict[str, Any] | None
    ) -> Iterator[tuple[Any, tuple[int, dict[str, Any]]]]:
        """``(example, (shard index, position after it))`` from ``position`` in ``shard`` on."""
        for index in range(shard, len(shards)):
            start = position if index == shard else None
            for example, after in self._read_from(shards[index], start):
                yield example, (index, after)

    def _read_from(self, shard: Shard, start: dict[str, Any] | None) -> Iterator[tuple[Any, dict[str, Any]]]:
        if hasattr(self.read_shard, "read_from"):
            yield from self.read_shard.read_from(shard, start)
            return
        done = int(start["examples"]) if start else 0
        for count, example in enumerate(islice(self.read_shard(shard), done, None), start=done + 1):
            yield example, {"examples": count}

    def _fill(
        self, shards: list[Shard], examples: Iterator, start: tuple[int, Any], buffer: int
    ) -> _Filled | None:
        """The next buffer: up to ``buffer_size`` examples read, tokenized and cut into batches; None when
        the epoch has no more."""
        read = list(islice(examples, self.buffer_size))
        if not read:
            return None
        raw = [example for example, _ in read]
        places = [at for _, at in read]
        del read  # the examples live in `raw` until their chunk is tokenized
        features: list[dict[str, Any]] = []
        lengths: list[tuple[int, int]] = []
        skipped = 0
        every = np.zeros((len(raw), 2), dtype=np.int64)  # every example's lengths, for the record
        # Tokenized a chunk at a time, each chunk's text let go and its ids packed before the next: memory
        # holds one buffer of packed ids and its text, not also a buffer of ids as Python lists.
        for first in range(0, len(raw), _TOKENIZE_CHUNK):
            chunk = raw[first : first + _TOKENIZE_CHUNK]
            raw[first : first + len(chunk)] = [None] * len(chunk)
            for k, example in enumerate(self._tokenize(chunk), start=first):
                index, after = places[k]
                pair = every[k] = self._lengths(example, shards[index], after)
                if max(pair) > self.max_tokens:
                    self._too_long(shards[index], after, pair)
                    skipped += 1
                    continue
                features.append(_pack(example))
                lengths.append(pair)
        self.num_skipped += skipped
        kept = np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
        batches = self._batches(kept, buffer) if features else []
        if len(raw) == self.buffer_size and not self._window_hint_given:
            self._window_hint(len(features), len(batches))
        lines = [(index, _line_number(after)) for index, after in places]
        record = encode_buffer(*line_layout(start[0], _line_number(start[1]), lines, every))
        return _Filled(
            batches, lambda j: [_unpack(features[i]) for i in batches[j]], places[-1], skipped, record
        )

    def _window_hint(self, examples: int, batches: int) -> None:
        """Say once when the windows make few batches each: padding follows the number of batches a window
        is cut into, which falls as the budget grows (on WMT-like lengths about 300 reach 0.95 efficiency)."""
        self._window_hint_given = True
        windows = max(1, -(-examples // self.window_size))
        per_window = batches / windows
        if 0 < per_window < WINDOW_BATCHES_HINT:
            logger.info(
                "StreamingTokenBatches: windows of %d examples make %.0f batches each at max_tokens=%d; larger "
                "windows pad less (about %d batches a window pad under 5%% on WMT-like lengths): window_size "
                "and buffer_size of about %d would make that many (memory holds a buffer; a resume's cost "
                "hardly grows with it)",
                self.window_size,
                per_window,
                self.max_tokens,
                WINDOW_BATCHES_HINT,
                int(self.window_size * WINDOW_BATCHES_HINT / per_window),
            )

    def _refill(
        self, shards: list[Shard], cursor: _Cursor, pool: ThreadPoolExecutor | None
    ) -> tuple[_Filled, Iterator]:
        """The buffer a saved position is inside, from its record: the lines it spans read again (undecoded
        when the reader can, ``ShardLines.read_lines_from``), its batches planned from the saved lengths,
        and the examples of the batches after the handed-out ones parsed and tokenized in chunks as they
        are needed, the first chunk one batch, so the first batch comes after one batch's tokenization.
        Also the examples after the buffer, read on from where it ends (a shard is not opened twice)."""
        segments, line_lengths = decode_buffer(cursor.record)
        raw_lines = hasattr(self.read_shard, "read_lines_from")
        lines, following = self._reread(shards, cursor, segments, raw_lines)
        shard_of = np.repeat(np.arange(cursor.shard, cursor.shard + len(segments)), segments)
        examples = np.flatnonzero(line_lengths[:, 0] >= 0)  # the lines that are examples
        lengths = line_lengths[examples]
        kept = lengths.max(axis=1, initial=0) <= self.max_tokens
        for i in np.flatnonzero(~kept):
            line = int(examples[i])
            self._too_long(shards[shard_of[line]], lines.position(line), tuple(lengths[i].tolist()))
        skipped = int((~kept).sum())
        self.num_skipped += skipped
        examples, lengths = examples[kept], lengths[kept]
        batches = self._batches(lengths, cursor.buffer) if len(examples) else []

        def tokenize_chunk(first: int, stop: int) -> dict[int, Any]:
            positions = np.concatenate(batches[first:stop]).tolist()
            raw = []
            for i in positions:
                line = int(examples[i])
                shard, where = shards[shard_of[line]], lines.position(line)
                example = lines.example(self.read_shard, shard, line) if raw_lines else lines.items[line]
                if example is None:
                    raise ValueError(_changed(f"{_where(shard, where)} is no example now"))
                raw.append(example)
            tokenized = self._tokenize(raw)
            for i, example in zip(positions, tokenized, strict=True):
                line = int(examples[i])
                lines.items[line] = None  # no longer needed
                shard, where = shards[shard_of[line]], lines.position(line)
                pair = self._lengths(example, shard, where)
                if pair != tuple(lengths[i].tolist()):
                    raise ValueError(
                        f"{_where(shard, where)}: the example's (source, target) lengths are {pair} but the "
                        f"saved position recorded {tuple(lengths[i].tolist())}: the tokenizer or the shard "
                        "changed since it was saved; resume with the same tokenizer and files, or start a "
                        "fresh epoch"
                    )
            return {i: _pack(example) for i, example in zip(positions, tokenized, strict=True)}

        chunks: dict[int, Any] = {}  # first batch of a chunk -> its examples (a future with prefetch)
        first, size = cursor.batches, 1
        while first < len(batches):
            stop = min(first + size, len(batches))
            chunks[first] = pool.submit(tokenize_chunk, first, stop) if pool else (first, stop)
            first, size = stop, min(2 * size, 64)
        ready: dict[int, Any] = {}

        def examples_of(j: int) -> list[Any]:
            if j in chunks:
                chunk = chunks.pop(j)
                ready.update(chunk.result() if pool else tokenize_chunk(*chunk))
            return [_unpack(ready.pop(i)) for i in batches[j].tolist()]

        end = (cursor.shard + len(segments) - 1, lines.end)
        return _Filled(batches, examples_of, end, skipped, cursor.record), following

    def _reread(
        self, shards: list[Shard], cursor: _Cursor, segments: list[int], raw_lines: bool
    ) -> tuple[_Lines, Iterator]:
        """The lines of the buffer that starts at ``cursor`` (``segments``: how many in each shard), and the
        examples after them: the rest of the last shard, read on from there, then the next shards."""
        lines = _Lines()
        for k, count in enumerate(segments):
            index = cursor.shard + k
            if index >= len(shards):
                raise ValueError(
                    _changed(f"the saved position spans {len(segments)} shard(s) from {cursor.shard}")
                )
            start = cursor.position if k == 0 else None
            if raw_lines:
                read = self.read_shard.read_lines_from(shards[index], start)
            else:
                read = self._read_from(shards[index], start)
            if lines.extend(islice(read, count)) < count:
                raise ValueError(
                    _changed(f"{_name(shards[index])} has fewer lines than the saved buffer read")
                )
            if k + 1 < len(segments):
                read.close()
        rest = self.read_shard.parse_lines(shards[index], read) if raw_lines else read
        return lines, self._read_on(shards, index, rest)

    def _read_on(
        self, shards: list[Shard], index: int, rest: Iterator[tuple[Any, dict[str, Any]]]
    ) -> Iterator[tuple[Any, tuple[int, dict[str, Any]]]]:
        for example, after in rest:
            yield example, (index, after)
        yield from self._examples(shards, index + 1, None)

    def _tokenize(self, raw: list[Any]) -> list[Any]:
        if self.batch_tokenize is not None:
            tokenized = list(self.batch_tokenize(raw))
            if len(tokenized) != len(raw):
                raise ValueError(f"batch_tokenize returned {len(tokenized)} examples for {len(raw)}")
            return tokenized
        if self.tokenize is not None:
            return [self.tokenize(example) for example in raw]
        return raw

    def _too_long(self, shard: Shard, position: dict[str, Any], pair: tuple[int, int]) -> None:
        if not self.skip_too_long:
            raise ValueError(
                f"{_where(shard, position)}: the example's (source, target) lengths {pair} exceed "
                f"max_tokens={self.max_tokens}; raise max_tokens, truncate or filter long examples, or "
                "pass skip_too_long=True"
            )

    def _lengths(self, features: Any, shard: Shard, position: dict[str, Any]) -> tuple[int, int]:
        try:
            source = features[self.source_key]
        except (KeyError, TypeError, IndexError):
            keys = sorted(features) if isinstance(features, dict) else type(features).__name__
            raise ValueError(
                f"{_where(shard, position)}: tokenized examples must be dicts with {self.source_key!r} "
                f"(source_key), got {keys}"
            ) from None
        target = features.get(self.target_key)
        return len(source), 0 if target is None else len(target)

    def _batches(self, lengths: np.ndarray, buffer: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, self.num_replicas, self.rank, buffer])
        return buffer_batches(
            lengths,
            rng,
            window_size=self.window_size,
            max_tokens=self.max_tokens,
            max_sentences=self.max_sentences,
            required_batch_size_multiple=self.required_batch_size_multiple,
            costliest_first=buffer == 0,
        )

    # ------------------------------------------------------------------------------------------ position
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next pass reads. Moving to another epoch starts at its beginning; setting the
        epoch it already has (as a loop does right after a resume) keeps the position."""
        if epoch != self.epoch:
            self._cursor = _Cursor()
            self._pass_complete = False
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch handed out, and the settings it is valid under."""
        return {"epoch": self.epoch, **asdict(self._cursor), **self._settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position (the next pass yields the batches after it); the settings saved
        with it must match, since on other shards, seeds or ranks the position means other data."""
        missing = {"epoch", *asdict(_Cursor())} - {"record"} - set(state)  # a record is optional
        if missing:
            raise KeyError(f"streaming state is missing {sorted(missing)}; got keys {sorted(state)}")
        for key, value in self._settings().items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"the streaming state was saved with {key}={state[key]!r} but this dataset has "
                    f"{key}={value!r}; resume with the same shards and settings, or start a fresh epoch"
                )
        self.epoch = int(state["epoch"])
        self._cursor = _Cursor(**{key: state.get(key) for key in asdict(_Cursor())})
        self._pass_complete = False

    def _settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
            "num_shards": len(self.shards),
            "shards_digest": self._shards_digest,
            "buffer_size": self.buffer_size,
            "window_size": self.window_size,
            "max_tokens": self.max_tokens,
        }


def _digest(shards: list[Shard]) -> str:
    """A short fingerprint of the shards' file names (not their folders: a corpus moved elsewhere resumes),
    to refuse a position saved on another file list."""
    names = "\n".join("\t".join(Path(p).name for p in shard_paths(s)) for s in shards)
    return hashlib.sha1(names.encode()).hexdigest()[:16]


class _Lines:
    """The lines a resume reads again, kept small: the undecoded bytes of a one-file line (or the example, for
    a reader without lines) and the line's number, never a position dict or list per line. Holding 200,000 of
    those made Python's cyclic garbage collector run over them again and again: two thirds of a resume."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.numbers: list[int] = []
        self.key = "lines"
        self.end: dict[str, Any] = {}

    def extend(self, read: Iterator[tuple[Any, dict[str, Any]]]) -> int:
        """Add the lines of one shard; how many there were."""
        count = 0
        for item, after in read:
            self.items.append(item[0] if isinstance(item, list) and len(item) == 1 else item)
            self.key = "lines" if "lines" in after else "examples"
            self.numbers.append(after[self.key])
            self.end = after
            count += 1
        return count

    def position(self, line: int) -> dict[str, Any]:
        return {self.key: self.numbers[line]}

    def example(self, reader: Any, shard: Shard, line: int) -> Any:
        item = self.items[line]
        return reader.parse_line(shard, [item] if isinstance(item, bytes) else item, self.position(line))


_INT32 = (-(2**31), 2**31 - 1)


def _pack(example: Any) -> Any:
    """A tokenized example as the buffer holds it: lists of ints as ``array('i')`` (4 bytes a token, where a
    list of Python ints takes about 36), so a buffer of 200,000 examples, the size large budgets need to pad
    little, holds a few hundred MB instead of over a GB. Anything else is kept as it is."""
    if not isinstance(example, dict):
        return example
    packed = {}
    for key, value in example.items():
        if type(value) is list and all(type(v) is int and _INT32[0] <= v <= _INT32[1] for v in value):
            value = _PackedIds("i", value)
        packed[key] = value
    return packed


def _unpack(example: Any) -> Any:
    """The example as it was tokenized (lists back as lists)."""
    if not isinstance(example, dict):
        return example
    return {key: value.tolist() if type(value) is _PackedIds else value for key, value in example.items()}


class _PackedIds(array):
    """An ``array('i')`` the buffer made from a list (a user's own arrays are handed out unchanged)."""


def _name(shard: Shard) -> str:
    return " + ".join(map(str, shard)) if isinstance(shard, (tuple, list)) else str(shard)


def _where(shard: Shard, position: dict[str, Any]) -> str:
    if "lines" in position:
        return f"{_name(shard)}, line {position['lines']}"
    return f"{_name(shard)}, example {position['examples']}"


def _line_number(position: dict[str, Any] | None) -> int:
    """Lines (or, for a reader without lines, examples) read in the shard up to ``position``."""
    if position is None:
        return 0
    return int(position["lines"] if "lines" in position else position["examples"])


def _changed(what: str) -> str:
    return (
        f"{what}: the shards changed since the streaming position was saved; resume on the same files, or "
        "start a fresh epoch"
    )
