"""python -m metrics: scores equal the library's, errors name the file and the line."""

import json
import re
import subprocess
import sys

import pytest
import sacrebleu

import metrics
from metrics.__main__ import main

HYPS = ["The cat sat on the mat.", "A dog runs in the park!", "Ünïcödé text is fine.", ""]
REFS = ["The cat is on the mat.", "A dog is running in a park.", "Ünïcödé text is okay.", "Nothing."]
REFS2 = ["A cat sat on a mat.", "The dog runs through the park.", "Unicode text is fine.", "Empty."]


@pytest.fixture
def files(tmp_path):
    def write(name: str, lines, *, raw: bytes | None = None):
        path = tmp_path / name
        path.write_bytes(raw if raw is not None else ("\n".join(lines) + "\n").encode("utf-8"))
        return str(path)

    return write


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_bleu_chrf_ter_with_two_reference_files(files, capsys):
    hyp, ref, ref2 = files("hyp.txt", HYPS), files("ref.txt", REFS), files("ref2.txt", REFS2)
    out = _json(capsys, ["bleu", "--predictions", hyp, "--references", ref, ref2, "--json"])
    assert out["bleu"] == sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score
    assert out["references"] == [ref, ref2]
    out = _json(capsys, ["bleu", "-p", hyp, "-r", ref, "--json", "--tokenize", "char", "--lowercase"])
    assert out["bleu"] == sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="char", lowercase=True).score
    out = _json(capsys, ["chrf", "-p", hyp, "-r", ref, ref2, "--json", "--word-order", "2"])
    assert out["chrf++"] == sacrebleu.corpus_chrf(HYPS, [REFS, REFS2], word_order=2).score
    out = _json(capsys, ["ter", "-p", hyp, "-r", ref, "--json"])
    assert out["ter"] == sacrebleu.corpus_ter(HYPS, [REFS]).score


def test_rouge_with_line_break_marker_and_sentence_scores(files, capsys):
    hyp = files("hyp.txt", ["Tom is here.<n>Ann left early.", "a cat"])
    ref = files("ref.txt", ["Ann left early.<n>Tom is here.", "the cat sat"])
    out = _json(capsys, ["rouge", "-p", hyp, "-r", ref, "--json", "--line-break", "<n>"])
    expected = metrics.rouge(
        ["Tom is here.\nAnn left early.", "a cat"], ["Ann left early.\nTom is here.", "the cat sat"]
    )
    assert {k: out[k] for k in expected} == expected
    assert main(["rouge", "-p", hyp, "-r", ref, "--sentence", "--rouge-types", "rouge1", "--no-stemmer"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["rouge1"] for r in rows] == [100.0, 100 * 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)]


def test_text_output_and_paired_bootstrap(files, capsys):
    hyp, base, ref = files("hyp.txt", REFS2), files("base.txt", HYPS), files("ref.txt", REFS)
    assert main(["bleu", "-p", hyp, "-r", ref, "--baseline", base, "--n-samples", "50"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"bleu = {sacrebleu.corpus_bleu(REFS2, [REFS]).score:.2f}")
    assert "paired bootstrap bleu" in text and "p = " in text
    out = _json(capsys, ["rouge", "-p", hyp, "-r", ref, "--json", "--baseline", base, "--n-samples", "50"])
    assert set(out["paired_bootstrap"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert out["paired_bootstrap"]["rouge1"]["score_b"] == out["rouge1"]


@pytest.mark.parametrize(
    ("hyp_lines", "hyp_raw", "ref_lines", "message"),
    [
        (HYPS, None, REFS[:3], r"ref\.txt has 3 lines but .*hyp\.txt has 4: line 4 of .*hyp\.txt"),
        (HYPS[:2], None, REFS, r"ref\.txt has 4 lines but .*hyp\.txt has 2: line 3 of .*ref\.txt"),
        (None, b"", REFS, r"hyp\.txt: the file is empty"),
        (None, b"fine\nbad \xff byte\nok\n", REFS[:3], r"hyp\.txt, line 2, byte column 5: not valid utf-8"),
    ],
)
def test_errors_name_the_file_and_line(files, capsys, hyp_lines, hyp_raw, ref_lines, message):
    hyp, ref = files("hyp.txt", hyp_lines, raw=hyp_raw), files("ref.txt", ref_lines)
    assert main(["bleu", "-p", hyp, "-r", ref]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert re.search(message, captured.err), captured.err


def test_other_encodings_are_read_when_asked(files, capsys):
    hyp = files("hyp.txt", None, raw="Der Bär läuft.\n".encode("latin-1"))
    ref = files("ref.txt", None, raw="Der Bär rennt.\n".encode("latin-1"))
    assert main(["chrf", "-p", hyp, "-r", ref]) == 2  # not UTF-8
    capsys.readouterr()
    out = _json(capsys, ["chrf", "-p", hyp, "-r", ref, "--encoding", "latin-1", "--json"])
    assert out["chrf"] == sacrebleu.corpus_chrf(["Der Bär läuft."], [["Der Bär rennt."]]).score


def test_missing_file_and_crlf(files, tmp_path, capsys):
    ref = files("ref.txt", None, raw=b"The cat is on the mat.\r\nA dog.\r\n")
    hyp = files("hyp.txt", ["The cat is on the mat.", "A dog."])
    assert _json(capsys, ["ter", "-p", hyp, "-r", ref, "--json"])["ter"] == 0.0
    assert main(["ter", "-p", str(tmp_path / "nope.txt"), "-r", ref]) == 2
    assert "nope.txt: cannot read" in capsys.readouterr().err


def test_python_dash_m_entry_point(files):
    hyp, ref = files("hyp.txt", HYPS), files("ref.txt", REFS)
    done = subprocess.run(
        [sys.executable, "-m", "metrics", "chrf", "-p", hyp, "-r", ref, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["chrf"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    failed = subprocess.run(
        [sys.executable, "-m", "metrics", "chrf", "-p", hyp, "-r", hyp + ".missing"],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2 and "cannot read" in failed.stderr
