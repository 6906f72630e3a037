"""The validated pairs of a set of data files, kept as one memory-mapped Arrow file per set of inputs.

Reading and checking millions of lines costs minutes; a second run over the same files should cost nothing.
The cache folder's name is a key of what decides the content: each input file's absolute path, size and
modification time (an edit changes one of them, as for `datasets.load_dataset`'s own cache of local files), the
fields read, and the loading options. Its `data.arrow` is written batch by batch while reading, so memory stays
bounded by one batch whatever the corpus size, and it is opened memory-mapped: the pairs stay on disk and in
the page cache, not in the process. `report.json` beside it keeps what the load dropped or skipped, so a run
that reuses the cache repeats the same warnings.

The file appears under its final name only once complete (written under a name unique to the process, then
renamed), so a run stopped mid-way, or several processes filling the same cache, never leave a partial file
that a later run would take for the whole corpus. The cache of an earlier version of the same files, read the
same way, is removed once the new one is complete (`remove_stale`), so editing a corpus does not pile up copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import datasets
from datasets.arrow_writer import ArrowWriter
from datasets.table import MemoryMappedTable

CACHE_LAYOUT = 1
"""Part of every key: raise it when what is written changes, so older caches are not read as the new layout."""

DATA_FILE, REPORT_FILE = "data.arrow", "report.json"


def cache_folder(
    files: list[Path], options: dict[str, Any], cache_dir: str | Path | None
) -> tuple[Path, str]:
    """The folder of the cache for `files` read with `options` (JSON-serialisable), and its lineage: the key of
    the same paths and options whatever their content, shared by the caches of earlier versions of the files."""
    paths = [str(path.resolve()) for path in files]
    stats = [[path.stat().st_size, path.stat().st_mtime_ns] for path in files]
    lineage = json.dumps([CACHE_LAYOUT, paths, options], sort_keys=True)
    key = json.dumps([lineage, stats])
    root = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE)
    return root / "s2s_text_pairs" / _digest(key), _digest(lineage)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def remove_stale(folder: Path, lineage: str) -> list[Path]:
    """Remove the caches of earlier versions of the same files read the same way (an edited corpus would
    otherwise leave a copy of itself behind at every edit); returns the folders removed. A process that still
    has one open keeps reading it: on Linux a removed file lives on while it is mapped."""
    removed = []
    for sibling in folder.parent.iterdir():
        report = sibling / REPORT_FILE
        if sibling == folder or not report.is_file():
            continue
        try:
            same = json.loads(report.read_text()).get("lineage") == lineage
        except (OSError, ValueError):
            continue
        if same:
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def open_cached(folder: Path) -> tuple[datasets.Dataset, dict[str, Any]] | None:
    """The cached dataset (memory-mapped) and its report, or None when the folder holds no complete cache."""
    data, report = folder / DATA_FILE, folder / REPORT_FILE
    if not (data.is_file() and report.is_file()):
        return None
    return _memory_mapped(data, folder.name), json.loads(report.read_text())


def _memory_mapped(path: Path, fingerprint: str) -> datasets.Dataset:
    # The cache key is the fingerprint: the tokenization map that follows keys its own cache on it, so the
    # same inputs find the same tokenized file run after run.
    return datasets.Dataset(MemoryMappedTable.from_file(str(path)), fingerprint=fingerprint)


class PairWriter:
    """Writes (source, target) columns batch by batch into the cache folder; `commit` makes them visible.

    Use as a context manager: leaving it without `commit` (an error while reading) removes the partial file."""

    def __init__(self, folder: Path, columns: tuple[str, str], *, batch_size: int = 10_000) -> None:
        self.folder, self.columns, self.batch_size = folder, columns, batch_size
        folder.mkdir(parents=True, exist_ok=True)
        self._partial = folder / f"{DATA_FILE}.{os.getpid()}.partial"
        features = datasets.Features({name: datasets.Value("string") for name in columns})
        # One record batch per `batch_size` pairs (the writer would otherwise cut them into 1,000-row batches):
        # opening a memory-mapped file reads every batch's header, and each read faults in ~64 KB around it, so
        # 10x fewer batches keep 10x fewer pages of the file resident (300 MB at 5M pairs with 1,000-row batches).
        self._writer = ArrowWriter(features=features, path=str(self._partial), writer_batch_size=batch_size)
        self._sources: list[str] = []
        self._targets: list[str] = []
        self._flushed = 0

    def __enter__(self) -> PairWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:  # not committed: an error on the way
            self._writer.close()
            self._partial.unlink(missing_ok=True)

    @property
    def rows_written(self) -> int:
        """Pairs handed to `add` so far."""
        return self._flushed + len(self._sources)

    def add(self, source: str, target: str) -> None:
        self._sources.append(source)
        self._targets.append(target)
        if len(self._sources) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if self._sources:
            self._writer.write_batch({self.columns[0]: self._sources, self.columns[1]: self._targets})
            self._flushed += len(self._sources)
            self._sources, self._targets = [], []

    def commit(self, report: dict[str, Any]) -> datasets.Dataset:
        """Finish the file, publish it under its final name with `report`, and open it memory-mapped."""
        self._flush()
        self._writer.finalize()
        self._writer.close()
        self._writer = None
        report_partial = self.folder / f"{REPORT_FILE}.{os.getpid()}.partial"
        report_partial.write_text(json.dumps(report))
        os.replace(self._partial, self.folder / DATA_FILE)
        os.replace(report_partial, self.folder / REPORT_FILE)  # last: its presence marks the cache complete
        return _memory_mapped(self.folder / DATA_FILE, self.folder.name)
