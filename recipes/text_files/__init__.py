"""Read raw (source, target) text pairs from local files into a `datasets.Dataset`.

Supported inputs, each optionally gzip-compressed (detected from the file's magic bytes, not its name):

- JSON Lines: one object per line; fields by name, nested fields by dotted name (`translation.de`);
- CSV / TSV with a header row (TSV is plain tab-separated: no quoting, so quotes inside a sentence stay as is);
- parallel plain-text files, one sentence per line (`train.de` + `train.en`): give the prefix `train`, or one of
  the two files, with the languages as the field names;
- a `datasets` dataset saved with `save_to_disk` (a `DatasetDict` needs `split=`).

Why one Python parser instead of `load_dataset("json", ...)`: every example passes through a line-by-line
check, so a broken line is reported with its file, line number and field, and the fix, instead of a pyarrow
traceback; and the same parser builds the dataset, so what was validated is exactly what is loaded (pyarrow
would also refuse a file whose *unrelated* fields change type between lines). The validated pairs are then
written by `datasets` (`Dataset.from_generator`) to an Arrow file in the cache, keyed by their content: the
result is file-backed, so the recipes' tokenization `map` caches and runs with `num_proc` as usual.

The modules, one job each: `errors` (the error that names file, line and field), `lines` (bytes -> checked
UTF-8 lines, gzip or not), `formats` (which format a path is), `readers` (one reader per line-based format),
`saved` (datasets saved with `save_to_disk`), `loading` (`load_text_pairs`: the table of readers, the checks
every example passes, the Arrow file).
"""

from recipes.text_files.errors import DataFileError
from recipes.text_files.formats import Format, detect_format, parallel_files
from recipes.text_files.loading import READERS, LoadReport, load_text_pairs

__all__ = [
    "READERS",
    "DataFileError",
    "Format",
    "LoadReport",
    "detect_format",
    "load_text_pairs",
    "parallel_files",
]
