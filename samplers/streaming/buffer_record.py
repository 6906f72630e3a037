"""What a resumed stream needs to rebuild one buffer's batches without tokenizing it again: the ``(source,
target)`` length of every example, line by line, saved with the position.

A buffer's batches depend on the lengths of all its examples (they are sorted together in look-ahead windows),
but a stream resumed in the middle of the buffer trains only on the batches still to come. Re-tokenizing the
whole buffer to learn those lengths is most of a resume's cost, and it grows with the buffer: about 80 us a
pair with a sentencepiece tokenizer, 17 s for a window of 200,000 pairs, the size that large token budgets
need to pad little. With the lengths saved, the resume plans the batches at once, and reads and tokenizes only
the examples of the next batches.

Lengths are kept per *line* read, so the resume can map lines to examples without parsing them: a line that
is no example (a blank line the parser skips, a bad line skipped on request) holds a marker. ``segments`` are
the number of lines read in each shard the buffer spans, from the buffer's start. Stored as uint16 when every
length fits (the common case: 4 bytes per line, about 0.4 MB for 200,000 lines after compression), int32
otherwise, zlib-compressed and base64-encoded so the record goes through JSON in a checkpoint.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np

NOT_AN_EXAMPLE = -1


def encode_buffer(segments: list[int], lengths: np.ndarray) -> dict[str, Any]:
    """The record of a buffer: ``segments`` (lines read per shard) and ``lengths`` (``(lines, 2)``, rows of
    ``NOT_AN_EXAMPLE`` for lines that are no example)."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
    if len(lengths) != sum(segments):
        raise ValueError(f"{len(lengths)} rows of lengths for {sum(segments)} lines")
    small = lengths.max(initial=0) < np.iinfo(np.uint16).max
    if small:
        # the marker becomes the largest uint16, which no length reaches
        stored, dtype = np.where(lengths < 0, np.iinfo(np.uint16).max, lengths).astype("<u2"), "uint16"
    else:
        stored, dtype = lengths.astype("<i4"), "int32"
    data = base64.b64encode(zlib.compress(stored.tobytes(), 1)).decode("ascii")
    return {"segments": list(segments), "dtype": dtype, "lengths": data}


def decode_buffer(record: dict[str, Any]) -> tuple[list[int], np.ndarray]:
    """``(segments, lengths)`` back from ``encode_buffer``'s record; a damaged record is a clear error."""
    try:
        segments = [int(n) for n in record["segments"]]
        dtype = {"uint16": "<u2", "int32": "<i4"}[record["dtype"]]
        raw = np.frombuffer(zlib.decompress(base64.b64decode(record["lengths"])), dtype=dtype)
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise ValueError(
            f"the streaming state's buffer record is damaged ({exc!r}); resume from another checkpoint or "
            "start a fresh epoch"
        ) from exc
    lengths = raw.astype(np.int64).reshape(-1, 2)
    if dtype == "<u2":
        lengths[lengths == np.iinfo(np.uint16).max] = NOT_AN_EXAMPLE
    if len(lengths) != sum(segments):
        raise ValueError(
            f"the streaming state's buffer record holds {len(lengths)} lines but its segments say "
            f"{sum(segments)}; resume from another checkpoint or start a fresh epoch"
        )
    return segments, lengths


def line_layout(
    start_shard: int, start_line: int, examples: list[tuple[int, int]], lengths: np.ndarray
) -> tuple[list[int], np.ndarray]:
    """``(segments, per-line lengths)`` of a buffer read from line ``start_line`` (lines already read) of
    shard ``start_shard``, whose examples sit at ``examples`` (``(shard, line number)`` each, in reading
    order; the line numbers count from 1 in each shard) with ``lengths`` (``(n, 2)``)."""
    shards = np.fromiter((shard for shard, _ in examples), dtype=np.int64, count=len(examples))
    lines = np.fromiter((line for _, line in examples), dtype=np.int64, count=len(examples))
    segments: list[int] = []
    parts: list[np.ndarray] = []
    for shard in range(start_shard, int(shards[-1]) + 1 if len(shards) else start_shard):
        mine = shards == shard
        first = start_line if shard == start_shard else 0
        if not mine.any():
            # a shard with no example read whole: its lines are skipped over, none kept
            segments.append(0)
            parts.append(np.zeros((0, 2), dtype=np.int64))
            continue
        count = int(lines[mine].max()) - first
        part = np.full((count, 2), NOT_AN_EXAMPLE, dtype=np.int64)
        part[lines[mine] - first - 1] = lengths[mine]
        segments.append(count)
        parts.append(part)
    return segments, (np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64))
