"""`load_text_pairs`: find the reader for each path (the `READERS` table), check every example it yields, and
stream the pairs into a memory-mapped Arrow file that the next run over the same files reuses (`arrow_cache`)."""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable
from pathlib import Path

import datasets

from recipes.text_files.arrow_cache import PairWriter, cache_folder, open_cached, remove_stale
from recipes.text_files.errors import DataFileError
from recipes.text_files.formats import Format, detect_format, parallel_files
from recipes.text_files.lines import BadLineHandler, check_file
from recipes.text_files.readers import Pairs, read_csv, read_json, read_parallel, read_tsv
from recipes.text_files.report import LoadReport, SkippedLines, log_report, log_skipped
from recipes.text_files.saved import load_saved

Reader = Callable[[tuple[Path, Path], tuple[str, str], BadLineHandler | None], Pairs]

READERS: dict[Format, Reader] = {
    "json": read_json,
    "csv": read_csv,
    "tsv": read_tsv,
    "text": read_parallel,  # two files, line i of one translating line i of the other
}
"""The reader of each line-based format. A saved dataset ("saved") is already columnar and is checked column
by column instead (`saved.load_saved`)."""

_GLOB_CHARACTERS = frozenset("*?[")

logger = logging.getLogger("recipes.text_files")


def load_text_pairs(
    data: str | Path | tuple[str | Path, str | Path],
    *,
    source_field: str,
    target_field: str,
    source_column: str = "source",
    target_column: str = "target",
    max_samples: int | None = None,
    drop_empty: bool = False,
    skip_bad_lines: bool = False,
    split: str | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """Load (source, target) string pairs as a `datasets.Dataset` with the columns `source_column`, `target_column`.

    Args:
        data: a JSONL/CSV/TSV file, a saved dataset directory, a parallel-text prefix or file (see
            `parallel_files`), an explicit `(source_file, target_file)` pair, or a glob pattern
            (`data/train-*.jsonl.gz`, `data/train-*.de`) whose files are read in name order as shards of one
            corpus.
        source_field / target_field: the field (dotted for nested JSON: `translation.de`), the CSV/TSV header
            name, or, for parallel text, the file suffix (the language).
        max_samples: keep the first `max_samples` valid examples and stop reading there (the rest of the file
            is not checked).
        drop_empty: drop examples whose source or target is empty or only whitespace, and log how many and
            which lines (by default they are an error, since they usually mean a broken export).
        skip_bad_lines: skip lines that cannot be read (malformed JSON or CSV, a missing field, a value that
            is not text, undecodable bytes) instead of stopping at the first; they are counted per file and a
            warning names how many and the first few file:line locations. Problems of a whole file (corrupt
            gzip, a JSON array, parallel files of different lengths) still raise.
        split: for a saved `DatasetDict`, the split to use.
        cache_dir: where the validated pairs are kept as Arrow (default: the `datasets` cache); a second load
            of unchanged files opens that file instead of reading them again.

    Raises:
        DataFileError: naming the file, the line and the field, with the fix.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be a positive number or None, got {max_samples}")
    if source_column == target_column:
        raise ValueError(f"source_column and target_column must differ, both are {source_column!r}")
    fields, columns = (source_field, target_field), (source_column, target_column)
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        return load_saved(
            Path(data), fields, columns, split=split, max_samples=max_samples, drop_empty=drop_empty
        )
    sources = [_resolve(item, fields) for item in _expand(data, fields)]
    origin = _origin(sources)
    options = {
        "formats": [fmt for fmt, _ in sources],
        "fields": fields,
        "columns": columns,
        "max_samples": max_samples,
        "drop_empty": drop_empty,
        "skip_bad_lines": skip_bad_lines,
    }
    inputs = list(dict.fromkeys(path for _, files in sources for path in files))
    folder, lineage = cache_folder(inputs, options, cache_dir)
    cached = open_cached(folder)
    if cached is not None:
        dataset, report = cached
        _log_reports(report)
        return dataset
    dataset, summary = _read_into_cache(sources, folder, columns, fields, lineage=lineage,
                                        max_samples=max_samples, drop_empty=drop_empty,
                                        skip_bad_lines=skip_bad_lines)  # fmt: skip
    for stale in remove_stale(folder, lineage):
        logger.info("removed the cache of an earlier version of %s: %s", origin, stale)
    _log_reports(summary)
    return dataset


def _read_into_cache(
    sources: list[tuple[Format, tuple[Path, Path]]],
    folder: Path,
    columns: tuple[str, str],
    fields: tuple[str, str],
    *,
    lineage: str,
    max_samples: int | None,
    drop_empty: bool,
    skip_bad_lines: bool,
) -> tuple[datasets.Dataset, dict]:
    """Read every input in order into the Arrow cache at `folder` (up to `max_samples` pairs); the cached
    dataset and the report kept beside it (pairs kept and dropped per input, lines skipped)."""
    skipped = SkippedLines()
    on_bad_line = skipped.add if skip_bad_lines else _refuse_bad_line
    reports: dict[str, LoadReport] = {}
    with PairWriter(folder, columns) as writer:
        for fmt, files in sources:
            left = None if max_samples is None else max_samples - writer.rows_written
            if left == 0:
                break
            reports[_origin([(fmt, files)])] = _collect(
                READERS[fmt](files, fields, on_bad_line),
                writer,
                files=files,
                fields=fields,
                max_samples=left,
                drop_empty=drop_empty,
            )
        summary = {
            "kept": writer.rows_written,
            "files": {name: [report.kept, report.dropped_empty] for name, report in reports.items()},
            "skipped": skipped.to_json(),
            "lineage": lineage,
        }
        if not summary["kept"]:
            _log_reports(summary)
            dropped = sum(len(report.dropped_empty) for report in reports.values())
            raise DataFileError(
                _origin(sources),
                "no examples" + (f" left after dropping {dropped} empty ones" if dropped else ""),
                fix="check that the file is the right one and is not empty",
            )
        return writer.commit(summary), summary


def _refuse_bad_line(error: DataFileError) -> None:
    """Without skip_bad_lines, a bad line stops the load; its message also says how to skip such lines."""
    fix = (error.fix + "; or" if error.fix else "Or") + (
        " pass skip_bad_lines=True (recipes: --skip_bad_lines) to skip such lines, counted and reported"
    )
    raise DataFileError(error.path, error.problem, line=error.line, field=error.field, fix=fix)


def _log_reports(summary: dict) -> None:
    """The warnings of a load (empty examples dropped, bad lines skipped), the same on a cached run."""
    for name, (kept, dropped) in summary["files"].items():
        log_report(name, LoadReport(kept=kept, dropped_empty=dropped))
    log_skipped(SkippedLines.from_json(summary["skipped"]), kept=summary["kept"])


def _origin(sources: list[tuple[Format, tuple[Path, Path]]]) -> str:
    """How messages name the inputs: the file, the two parallel files, or the first of several shards."""
    _, files = sources[0]
    first = str(files[0]) if files[0] == files[1] else f"{files[0]} + {files[1]}"
    return first if len(sources) == 1 else f"{first} and {len(sources) - 1} more shard(s)"


def _expand(
    data: str | Path | tuple[str | Path, str | Path], fields: tuple[str, str]
) -> list[str | Path | tuple[str | Path, str | Path]]:
    """The inputs `data` names: itself, or the files a glob pattern matches, in name order (shards of one
    corpus; for parallel text, the two files of a shard are one input)."""
    if not isinstance(data, (str, Path)) or not (_GLOB_CHARACTERS & set(str(data))) or Path(data).exists():
        return [data]
    matches = sorted(glob.glob(str(data)))
    if not matches:
        raise DataFileError(
            data, "no file matches this pattern", fix="check the folder and the pattern (quote it in a shell)"
        )
    inputs: list[str | Path | tuple[str | Path, str | Path]] = []
    seen: set[tuple[Path, Path]] = set()
    for match in matches:
        if detect_format(match) == "text":
            pair = parallel_files(match, *fields)
            if pair is not None:
                if pair not in seen:  # train-0.de and train-0.en both match: one input
                    seen.add(pair)
                    inputs.append(pair)
                continue
        inputs.append(match)
    return inputs


def _resolve(
    data: str | Path | tuple[str | Path, str | Path], fields: tuple[str, str]
) -> tuple[Format, tuple[Path, Path]]:
    """The line-based format of `data` and the (source, target) files to read, both checked to exist; a
    single-file format names its file twice."""
    if not isinstance(data, (str, Path)):
        files = tuple(Path(p) for p in data)
        if len(files) != 2:
            raise ValueError(f"a parallel corpus is two files (source, target), got {len(files)}: {data!r}")
        for f in files:
            check_file(f)
        return "text", (files[0], files[1])
    path = Path(data)
    fmt = detect_format(path)
    if fmt != "text":
        check_file(path)
        return fmt, (path, path)
    pair = parallel_files(path, *fields)
    if pair is not None:
        return "text", pair
    if not path.exists():
        raise DataFileError(
            path,
            f"no such file, and no parallel files {path.name}.{fields[0]} + {path.name}.{fields[1]} next to it",
            fix="pass a .jsonl/.csv/.tsv file, a saved dataset directory, or the prefix of two parallel "
            "text files named <prefix>.<source_lang> and <prefix>.<target_lang>",
        )
    check_file(path)
    raise DataFileError(
        path,
        f"cannot tell the format from the name (expected .jsonl, .json, .csv, .tsv, or parallel "
        f"files ending in .{fields[0]} and .{fields[1]})",
        fix="rename the file with one of these suffixes (optionally followed by .gz)",
    )


def _collect(
    reader: Pairs,
    writer: PairWriter,
    *,
    files: tuple[Path, Path],
    fields: tuple[str, str],
    max_samples: int | None,
    drop_empty: bool,
) -> LoadReport:
    """Run a reader to the end (or `max_samples` kept pairs), checking for empty sources and targets, and hand
    each kept pair to `writer`.

    `files` and `fields` name where the source and the target come from (the same file twice, except for
    parallel text), for the error message.
    """
    report = LoadReport()
    for number, source, target in reader:
        empty = [side for side, text in enumerate((source, target)) if not text.strip()]
        if empty:
            if drop_empty:
                report.dropped_empty.append(number)
                continue
            raise DataFileError(
                files[empty[0]],
                "is empty" if len(empty) == 1 else "source and target are both empty",
                line=number,
                field=fields[empty[0]],
                fix="remove the example from the file, or pass drop_empty=True (recipes: --drop_empty_examples) "
                "to drop such examples and count them",
            )
        writer.add(source, target)
        report.kept += 1
        if max_samples is not None and report.kept >= max_samples:
            break
    return report
