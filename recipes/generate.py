"""Translate or summarize lines of text with a trained model, with beam search.

    echo "Ein Mann fährt Fahrrad." | python -m recipes.generate out/
    python -m recipes.generate out/ --input news.de --output news.en --num_beams 5 --batch_size 64

`out/` is a recipe's output_dir, or any folder with a saved model and its tokenizer. A Hugging Face model folder
decodes on our engine, imported with its generation settings; `--model_engine transformers` keeps Hugging Face's
model. One input line gives one output line, in the same order; empty input lines give empty output lines. The
source prefix and the length limits the model was trained with (recipe_args.json) are applied unless overridden.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # `python recipes/generate.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recipes.cli import DEBUG_HELP, run_command
from recipes.hf_models import ENGINES, load_model_folder
from recipes.outputs import RECIPE_ARGS_FILE
from recipes.tokenizer import load_any_tokenizer

logger = logging.getLogger("recipes.generate")


def load_model(model_dir: str | Path, *, engine: str = "s2s") -> tuple[Any, Any]:
    """The model (eval mode) and tokenizer saved in `model_dir`. A Hugging Face folder is imported into our
    engine, or with `engine="transformers"` kept as Hugging Face's own model."""
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; pass a recipe's output_dir")
    tokenizer = load_any_tokenizer(path)
    model = load_model_folder(path, engine)
    return model.eval(), tokenizer


def recipe_settings(model_dir: str | Path) -> dict[str, Any]:
    """The data arguments the model was trained with (source prefix, length limits), when saved."""
    path = Path(model_dir) / RECIPE_ARGS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("data", {})
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}); is the file complete?"
        ) from None


def batches_by_length(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of `texts` in batches of similar length (less padding), longest first; callers restore order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def generate_lines(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    source_prefix: str = "",
    max_source_length: int | None = None,
) -> list[str]:
    """One output string per input string, in input order (blank inputs give "")."""
    import torch

    from s2s.models.packed import fixed_weights

    outputs = [""] * len(texts)
    todo = [i for i, text in enumerate(texts) if text.strip()]
    gen_kwargs: dict[str, Any] = {}
    if num_beams is not None:
        gen_kwargs["num_beams"] = num_beams
    if max_new_tokens is not None:
        gen_kwargs["max_new_tokens"] = max_new_tokens
    with torch.inference_mode(), fixed_weights(model):
        for batch in batches_by_length([texts[i] for i in todo], batch_size):
            sources = [source_prefix + texts[todo[j]] for j in batch]
            encoded = tokenizer(
                sources,
                truncation=max_source_length is not None,
                max_length=max_source_length,
                padding=True,
                return_tensors="pt",
            )
            ids = model.generate(encoded["input_ids"], attention_mask=encoded["attention_mask"], **gen_kwargs)
            ids = getattr(ids, "sequences", ids)
            for j, text in zip(batch, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                outputs[todo[j]] = " ".join(text.split("\n")).strip()
    return outputs


def _read_lines(stream: Iterable[str]) -> list[str]:
    return [line.rstrip("\r\n") for line in stream]


def read_input(path: str | Path) -> list[str]:
    """The lines of `--input`; a missing file or bytes that are not UTF-8 are named with the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
    data = path.read_bytes()
    try:
        return _read_lines(io.StringIO(data.decode("utf-8"), newline=None))  # newlines as open() reads them
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"--input {path}, line {line}: bytes that are not valid UTF-8 (byte {data[err.start]:#04x}); "
            "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`"
        ) from None


def main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model_dir",
        help="a recipe's output_dir or a Hugging Face model folder (model, tokenizer, generation config)",
    )
    parser.add_argument("--input", help="file with one source per line (default: stdin)")
    parser.add_argument("--output", help="file to write one output per line (default: stdout)")
    parser.add_argument("--num_beams", type=int, help="beam width (default: the model's generation config)")
    parser.add_argument(
        "--max_new_tokens", type=int, help="longest output (default: the generation config's)"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="sources per generate call (default 32)")
    parser.add_argument("--source_prefix", help="text put before each source (default: as trained)")
    parser.add_argument(
        "--model_engine",
        choices=ENGINES,
        default="s2s",
        help="a Hugging Face model folder decodes on our engine (s2s, the default: imported, with its "
        "generation settings) or as Hugging Face's own model (transformers)",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    for name in ("num_beams", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")

    model, tokenizer = load_model(args.model_dir, engine=args.model_engine)
    settings = recipe_settings(args.model_dir)
    prefix = args.source_prefix if args.source_prefix is not None else settings.get("source_prefix") or ""
    texts = read_input(args.input) if args.input else _read_lines(stdin or sys.stdin)
    outputs = generate_lines(
        texts,
        model,
        tokenizer,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        source_prefix=prefix,
        max_source_length=settings.get("max_source_length"),
    )
    text = "".join(line + "\n" for line in outputs)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        (stdout or sys.stdout).write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
