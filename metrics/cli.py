"""``python -m metrics bleu|chrf|ter|rouge --predictions hyp.txt --references ref.txt [ref2.txt ...]``.

A file that cannot be scored (missing, empty, not in the encoding, lines that do not line up) or a bad option
value ends the command with ``error: <message>`` on stderr and exit status 2, no traceback; ``--debug`` (or
``S2S_DEBUG=1`` in the environment) shows the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from metrics.bootstrap import paired_bootstrap
from metrics.rouge_scoring import DEFAULT_ROUGE_TYPES, rouge
from metrics.textfiles import InputFileError, read_aligned, read_lines
from metrics.translation import bleu, chrf, ter


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--predictions", "-p", required=True, help="system output, one example per line")
    common.add_argument(
        "--references",
        "-r",
        required=True,
        nargs="+",
        help="reference file(s), line-aligned with predictions",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("--sentence", action="store_true", help="print one score per line (JSON lines)")
    common.add_argument("--encoding", default="utf-8", help="encoding of all input files (default utf-8)")
    common.add_argument(
        "--baseline", help="a second system's output: run a paired bootstrap test of --predictions against it"
    )
    common.add_argument("--n-samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    common.add_argument(
        "--seed", type=int, default=12345, help="bootstrap seed (default 12345, as sacrebleu)"
    )
    common.add_argument(
        "--debug", action="store_true", help="on an input error, show the traceback (as S2S_DEBUG=1 does)"
    )

    parser = argparse.ArgumentParser(prog="python -m metrics", description=__doc__)
    sub = parser.add_subparsers(dest="metric", required=True)

    p = sub.add_parser("bleu", parents=[common], help="corpus BLEU (sacrebleu)")
    p.add_argument("--tokenize", "-tok", default="13a", help="sacrebleu tokenizer (default 13a)")
    p.add_argument("--lowercase", "-lc", action="store_true")
    p.add_argument("--smooth-method", default="exp", choices=["exp", "floor", "add-k", "none"])
    p.add_argument("--smooth-value", type=float, default=None)
    p.add_argument("--max-ngram-order", type=int, default=4)

    p = sub.add_parser("chrf", parents=[common], help="chrF / chrF++ (sacrebleu)")
    p.add_argument("--char-order", type=int, default=6)
    p.add_argument("--word-order", type=int, default=0, help="2 for chrF++")
    p.add_argument("--beta", type=int, default=2)
    p.add_argument("--lowercase", "-lc", action="store_true")
    p.add_argument("--whitespace", action="store_true")
    p.add_argument("--eps-smoothing", action="store_true")

    p = sub.add_parser("ter", parents=[common], help="translation edit rate (sacrebleu)")
    p.add_argument("--normalized", action="store_true")
    p.add_argument("--no-punct", action="store_true")
    p.add_argument("--asian-support", action="store_true")
    p.add_argument("--case-sensitive", action="store_true")

    p = sub.add_parser("rouge", parents=[common], help="ROUGE F1 x 100 (rouge-score)")
    p.add_argument("--rouge-types", nargs="+", default=list(DEFAULT_ROUGE_TYPES))
    p.add_argument("--no-stemmer", action="store_true", help="turn off Porter stemming (on by default)")
    p.add_argument("--split-sentences", action="store_true", help="split into sentences for rougeLsum")
    p.add_argument(
        "--line-break",
        metavar="TOKEN",
        help="a marker (e.g. '<n>') that stands for a line break inside an example: rougeLsum sentences",
    )
    p.add_argument("--num-workers", type=int, default=1, help="processes for scoring (0: one per CPU)")
    return parser


def _options(args: argparse.Namespace) -> dict:
    if args.metric == "bleu":
        return dict(
            tokenize=args.tokenize,
            lowercase=args.lowercase,
            smooth_method=args.smooth_method,
            smooth_value=args.smooth_value,
            max_ngram_order=args.max_ngram_order,
        )
    if args.metric == "chrf":
        return dict(
            char_order=args.char_order,
            word_order=args.word_order,
            beta=args.beta,
            lowercase=args.lowercase,
            whitespace=args.whitespace,
            eps_smoothing=args.eps_smoothing,
        )
    if args.metric == "ter":
        return dict(
            normalized=args.normalized,
            no_punct=args.no_punct,
            asian_support=args.asian_support,
            case_sensitive=args.case_sensitive,
        )
    return dict(
        rouge_types=tuple(args.rouge_types),
        use_stemmer=not args.no_stemmer,
        split_sentences=args.split_sentences,
        num_workers=args.num_workers,
    )


def _run(args: argparse.Namespace) -> tuple[object, dict]:
    predictions, streams = read_aligned(args.predictions, args.references, encoding=args.encoding)
    baseline = read_lines(args.baseline, encoding=args.encoding) if args.baseline else None
    if baseline is not None and len(baseline) != len(predictions):
        raise InputFileError(
            f"{args.baseline} has {len(baseline)} lines but {args.predictions} has {len(predictions)}"
        )
    if args.metric == "rouge" and args.line_break:
        predictions = [p.replace(args.line_break, "\n") for p in predictions]
        streams = [[r.replace(args.line_break, "\n") for r in s] for s in streams]
        if baseline is not None:
            baseline = [b.replace(args.line_break, "\n") for b in baseline]
    options = _options(args)
    score_fn = {"bleu": bleu, "chrf": chrf, "ter": ter, "rouge": rouge}[args.metric]
    result = score_fn(predictions, streams, ref_layout="streams", sentence=args.sentence, **options)
    tests = {}
    if baseline is not None:
        names = list(options["rouge_types"]) if args.metric == "rouge" else [args.metric]
        if args.metric == "rouge":
            options = {k: v for k, v in options.items() if k != "rouge_types"}
        for name in names:
            tests[name] = paired_bootstrap(
                name,
                baseline,
                predictions,
                streams,
                ref_layout="streams",
                n_samples=args.n_samples,
                seed=args.seed,
                **options,
            )
    return result, tests


def _print_text(args: argparse.Namespace, result: dict, tests: dict) -> None:
    main_keys = [
        k for k in result if k in ("bleu", "ter") or k.startswith(("chrf", "rouge")) and "_" not in k
    ]
    print("  ".join(f"{k} = {result[k]:.2f}" for k in main_keys))
    details = {k: v for k, v in result.items() if k not in main_keys}
    if details:
        print("  ".join(f"{k} = {v:.4g}" for k, v in details.items()))
    for name, t in tests.items():
        print(
            f"paired bootstrap {name}: {args.predictions} {t['score_b']:.2f} vs baseline {t['score_a']:.2f}, "
            f"delta {t['delta']:+.2f} (95% {t['delta_low']:+.2f} .. {t['delta_high']:+.2f}), "
            f"p = {t['p_value']:.4f}"
        )


def _debug(args: argparse.Namespace) -> bool:
    return args.debug or os.environ.get("S2S_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result, tests = _run(args)
    except (InputFileError, ValueError) as e:  # InputFileError: the file and the line; ValueError: an option
        if _debug(args):
            raise
        print(
            "error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()),
            file=sys.stderr,
        )
        return 2
    if args.sentence:
        for row in result:
            print(json.dumps(row))
    elif args.json:
        out = {
            "metric": args.metric,
            "predictions": args.predictions,
            "references": args.references,
            **result,
        }
        if tests:
            out["paired_bootstrap"] = tests
        print(json.dumps(out, indent=1))
    else:
        _print_text(args, result, tests)
    return 0
