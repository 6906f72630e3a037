"""metrics: parity with sacrebleu and rouge-score, exact merging of statistics, paired bootstrap."""

import random
import statistics
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

import metrics

HYPS = [
    "The cat sat on the mat.",
    "A man in a blue shirt is riding a bike down the street.",
    "Zwei Hunde spielen im Schnee.",
    "Der Bär läuft über die Straße, während es regnet!",
    "She said: « c'est la vie » and left.",
    "Children are playing football in the park near the river.",
    "東京は大きい都市です。",
    "A woman is cooking dinner in a small kitchen",
    "Two people walking together on a sandy beach at sunset.",
    "He isn't going to the store today; maybe tomorrow.",
]
REFS = [
    "The cat is sitting on the mat.",
    "A man wearing a blue shirt rides his bicycle down the road.",
    "Zwei Hunde spielen draußen im Schnee.",
    "Ein Bär läuft über die Straße, während es regnet.",
    "She said « c'est la vie » and then she left.",
    "Kids play soccer in a park by the river.",
    "東京は大都市です。",
    "A woman cooks dinner in her small kitchen.",
    "Two people walk along a sandy beach at sunset.",
    "He is not going to the store today, perhaps tomorrow.",
]
REFS2 = [
    "A cat sat on a mat.",
    "A man in blue is biking down the street.",
    "Zwei Hunde im Schnee.",
    "Der Bär rennt über die Straße im Regen!",
    "« C'est la vie », she said, and left.",
    "Children play football in the park.",
    "東京は大きな都市です。",
    "A lady is making dinner in a tiny kitchen.",
    "Two persons walking on the beach at dusk.",
    "He won't go to the shop today; maybe tomorrow.",
]

# empty hypothesis, empty reference, both empty, unicode only, a single word
EDGE_HYPS = ["", "A man is here.", "", "Ünïcödé ✓ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 — ok", "word"]
EDGE_REFS = ["Something was said.", "", "", "Ünïcödé ✓ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 – okay", "word"]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _rouge_reference(preds, refs, *, use_stemmer=True, types=ROUGE_TYPES):
    """rouge-score per example, averaged exactly (statistics.mean sums floats without rounding)."""
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    scores = [scorer.score(r, p) for p, r in zip(preds, refs)]
    return {t: 100 * statistics.mean(s[t].fmeasure for s in scores) for t in types}, scores


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tokenize": "intl"},
        {"tokenize": "char"},
        {"tokenize": "none", "lowercase": True},
        {"smooth_method": "floor", "smooth_value": 0.2},
        {"smooth_method": "add-k"},
        {"smooth_method": "none"},
        {"max_ngram_order": 2},
    ],
)
def test_bleu_equals_sacrebleu(options):
    ours = metrics.bleu(HYPS, REFS, **options)
    ref = BLEU(**options).corpus_score(HYPS, [REFS])
    assert ours["bleu"] == ref.score
    assert [ours[f"precision_{n + 1}"] for n in range(len(ref.precisions))] == ref.precisions
    assert (ours["bp"], ours["sys_len"], ours["ref_len"]) == (ref.bp, ref.sys_len, ref.ref_len)


def test_bleu_several_references_in_either_layout():
    ref = sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score
    assert metrics.bleu(HYPS, [REFS, REFS2])["bleu"] == ref  # streams, detected from the shape
    assert metrics.bleu(HYPS, list(zip(REFS, REFS2)))["bleu"] == ref  # one list per example
    # variable number of references per example: sacrebleu marks missing ones with None
    uneven = [[r, r2] if i % 2 else [r] for i, (r, r2) in enumerate(zip(REFS, REFS2))]
    streams = [REFS, [r2 if i % 2 else None for i, r2 in enumerate(REFS2)]]
    assert metrics.bleu(HYPS, uneven)["bleu"] == sacrebleu.corpus_bleu(HYPS, streams).score
    assert metrics.chrf(HYPS, uneven)["chrf"] == sacrebleu.corpus_chrf(HYPS, streams).score


def test_square_reference_lists_read_per_example_unless_told():
    hyps, refs = HYPS[:2], [[REFS[0], REFS2[0]], [REFS[1], REFS2[1]]]
    as_examples = sacrebleu.corpus_bleu(hyps, [[REFS[0], REFS[1]], [REFS2[0], REFS2[1]]]).score
    as_streams = sacrebleu.corpus_bleu(hyps, refs).score
    assert as_examples != as_streams
    assert metrics.bleu(hyps, refs)["bleu"] == as_examples
    assert metrics.bleu(hyps, refs, ref_layout="streams")["bleu"] == as_streams


def test_chrf_and_chrf_plus_plus_equal_sacrebleu():
    assert metrics.chrf(HYPS, REFS)["chrf"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    pp = metrics.chrf(HYPS, [REFS, REFS2], word_order=2)
    assert pp["chrf++"] == sacrebleu.corpus_chrf(HYPS, [REFS, REFS2], word_order=2).score
    options = {"lowercase": True, "eps_smoothing": True, "beta": 3, "whitespace": True}
    assert metrics.chrf(HYPS, REFS, **options)["chrf"] == CHRF(**options).corpus_score(HYPS, [REFS]).score


@pytest.mark.parametrize("options", [{}, {"normalized": True, "case_sensitive": True}, {"no_punct": True}])
def test_ter_equals_sacrebleu(options):
    ref = sacrebleu.corpus_ter(HYPS, [REFS, REFS2], **options)
    ours = metrics.ter(HYPS, [REFS, REFS2], **options)
    assert ours["ter"] == ref.score
    assert (ours["num_edits"], ours["ref_length"]) == (ref.num_edits, ref.ref_length)


def test_rouge_equals_rouge_score_mean():
    expected, per_example = _rouge_reference(HYPS, REFS)
    ours = metrics.rouge(HYPS, REFS)
    assert {t: ours[t] for t in ROUGE_TYPES} == expected
    for t in ROUGE_TYPES:
        assert ours[f"{t}_precision"] == 100 * statistics.mean(s[t].precision for s in per_example)
        assert ours[f"{t}_recall"] == 100 * statistics.mean(s[t].recall for s in per_example)
    plain, _ = _rouge_reference(HYPS, REFS, use_stemmer=False)
    assert {t: metrics.rouge(HYPS, REFS, use_stemmer=False)[t] for t in ROUGE_TYPES} == plain


def test_rouge_several_references_take_the_best():
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    best = [scorer.score_multi([r, r2], h) for h, r, r2 in zip(HYPS, REFS, REFS2)]
    ours = metrics.rouge(HYPS, list(zip(REFS, REFS2)))
    assert ours["rougeL"] == 100 * statistics.mean(s["rougeL"].fmeasure for s in best)


def test_sentence_scores_equal_sacrebleu_and_rouge_score():
    bleu = metrics.bleu(HYPS, REFS, sentence=True)
    chrf = metrics.chrf(HYPS, REFS, sentence=True)
    ter = metrics.ter(HYPS, REFS, sentence=True)
    rouge = metrics.rouge(HYPS, REFS, sentence=True)
    _, per_example = _rouge_reference(HYPS, REFS)
    assert len(bleu) == len(chrf) == len(ter) == len(rouge) == len(HYPS)
    for i, (h, r) in enumerate(zip(HYPS, REFS)):
        assert bleu[i]["bleu"] == sacrebleu.sentence_bleu(h, [r]).score
        assert chrf[i]["chrf"] == sacrebleu.sentence_chrf(h, [r]).score
        assert ter[i]["ter"] == sacrebleu.sentence_ter(h, [r]).score
        assert rouge[i]["rouge2"] == 100 * per_example[i]["rouge2"].fmeasure


@pytest.mark.parametrize("case", range(len(EDGE_HYPS)))
def test_edge_cases_single_examples(case):
    hyps, refs = [EDGE_HYPS[case]], [EDGE_REFS[case]]
    assert metrics.bleu(hyps, refs)["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert metrics.chrf(hyps, refs)["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert metrics.ter(hyps, refs)["ter"] == sacrebleu.corpus_ter(hyps, [refs]).score
    expected, _ = _rouge_reference(hyps, refs)
    assert {t: metrics.rouge(hyps, refs)[t] for t in ROUGE_TYPES} == expected


def test_edge_cases_as_a_corpus():
    assert metrics.bleu(EDGE_HYPS, EDGE_REFS)["bleu"] == sacrebleu.corpus_bleu(EDGE_HYPS, [EDGE_REFS]).score
    assert metrics.ter(EDGE_HYPS, EDGE_REFS)["ter"] == sacrebleu.corpus_ter(EDGE_HYPS, [EDGE_REFS]).score
    same = ["an exact match is a perfect score"]
    assert metrics.bleu(same, same)["bleu"] == pytest.approx(100.0)
    assert metrics.ter(same, same)["ter"] == 0.0


def test_bad_inputs_raise_with_the_reason():
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        metrics.bleu(HYPS[:3], REFS[:2])
    with pytest.raises(ValueError, match="empty"):
        metrics.rouge([], [])
    with pytest.raises(TypeError, match=r"predictions\[1\]"):
        metrics.chrf(["a", None], ["a", "b"])
    with pytest.raises(ValueError, match="smooth_method"):
        metrics.bleu(HYPS, REFS, smooth_method="bogus")
    with pytest.raises(ValueError, match="unknown rouge type"):
        metrics.rouge(HYPS, REFS, rouge_types=("rougeX",))


def _synthetic_corpus(n: int, seed: int):
    rng = random.Random(seed)
    vocab = [
        "the",
        "a",
        "cat",
        "dog",
        "runs",
        "ran",
        "sits",
        "on",
        "mat",
        "park",
        "red",
        "blue",
        "big",
        "small",
        "house",
        "river",
        "tree",
        "and",
        "of",
    ]

    def sentence():
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 14))]
        return " ".join(words) + rng.choice(["", ".", "!", " ?"])

    hyps = [sentence() for _ in range(n)]
    refs = [[sentence() for _ in range(3)] for _ in range(n)]  # three references: TER averages them
    return hyps, refs


def _random_batches(n: int, rng: random.Random):
    cuts = sorted(rng.sample(range(1, n), rng.randint(1, 12)))
    bounds = [0, *cuts, n]
    return [(a, b) for a, b in zip(bounds, bounds[1:])]


def test_merged_statistics_over_random_batch_splits_equal_the_corpus_score():
    hyps, refs = _synthetic_corpus(120, seed=1)
    full = {
        "bleu": metrics.bleu(hyps, refs),
        "chrf": metrics.chrf(hyps, refs, word_order=2),
        "ter": metrics.ter(hyps, refs),
        "rouge": metrics.rouge(hyps, refs),
    }
    assert full["bleu"]["bleu"] == sacrebleu.corpus_bleu(hyps, list(map(list, zip(*refs)))).score
    rng = random.Random(7)
    for _ in range(10):
        batches = _random_batches(len(hyps), rng)
        rng.shuffle(batches)  # merge order must not matter either
        parts = [(hyps[a:b], refs[a:b]) for a, b in batches]
        merged = {
            "bleu": sum(metrics.bleu_stats(h, r) for h, r in parts).compute(),
            "chrf": sum(metrics.chrf_stats(h, r, word_order=2) for h, r in parts).compute(),
            "ter": sum(metrics.ter_stats(h, r) for h, r in parts).compute(),
            "rouge": sum(metrics.rouge_stats(h, r) for h, r in parts).compute(),
        }
        assert merged == full


def test_rouge_mean_is_exact_where_a_float_sum_is_not():
    # 0.1 + 0.2 + 0.3 differs from 0.3 + 0.2 + 0.1 in floating point; exact sums do not
    opts = metrics.RougeOptions(rouge_types=("rouge1",))
    rows = [((0.0, 0.0, f),) for f in (0.1, 0.2, 0.3)]
    forward = sum(metrics.RougeStats.from_scores([r], opts) for r in rows)
    backward = sum(metrics.RougeStats.from_scores([r], opts) for r in reversed(rows))
    assert (0.1 + 0.2) + 0.3 != (0.3 + 0.2) + 0.1
    assert forward.compute() == backward.compute()
    assert forward.compute()["rouge1"] == 100 * statistics.mean([0.1, 0.2, 0.3])


def test_statistics_round_trip_and_refuse_mixed_options():
    hyps, refs = _synthetic_corpus(20, seed=2)
    stats = metrics.bleu_stats(hyps, refs)
    assert metrics.BleuStats.from_list(stats.to_list(), stats.options) == stats
    with pytest.raises(ValueError, match="different options"):
        stats + metrics.bleu_stats(hyps, refs, lowercase=True)
    with pytest.raises(ValueError, match="different options"):
        metrics.rouge_stats(hyps, refs) + metrics.rouge_stats(hyps, refs, use_stemmer=False)


def test_parallel_rouge_equals_serial():
    hyps, refs = _synthetic_corpus(40, seed=3)
    serial = metrics.rouge(hyps, refs, sentence=True)
    assert metrics.rouge(hyps, refs, sentence=True, num_workers=2) == serial
    assert metrics.rouge(hyps, refs, num_workers=3) == metrics.rouge(hyps, refs)


def test_split_sentences_feeds_rougelsum_one_sentence_per_line():
    assert metrics.split_sentences("Hi there. How are you? Fine!  Mr. smith pays 3.5 dollars.") == (
        "Hi there.\nHow are you?\nFine!\nMr. smith pays 3.5 dollars."
    )
    assert metrics.split_sentences("Line one\n\nLine two. And three.") == "Line one\nLine two.\nAnd three."
    assert (
        metrics.split_sentences("the cat sat . a dog ran .") == "the cat sat .\na dog ran ."
    )  # lowercased output
    assert metrics.split_sentences('J. Doe met e.g. Dr. Who (ok). He said "stop." Wow!! ok') == (
        'J. Doe met e.g. Dr. Who (ok).\nHe said "stop."\nWow!!\nok'
    )
    pred, ref = "Tom is here. Ann left early.", "Ann left early. Tom is here."
    split = metrics.rouge([pred], [ref], split_sentences=True)["rougeLsum"]
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected = scorer.score("Ann left early.\nTom is here.", "Tom is here.\nAnn left early.")["rougeLsum"]
    assert split == 100 * expected.fmeasure == 100.0
    assert metrics.rouge([pred], [ref])["rougeLsum"] < 100.0  # one "sentence": the order matters


def test_paired_bootstrap_identical_systems_are_not_different():
    for name in ("bleu", "rougeL"):
        result = metrics.paired_bootstrap(name, HYPS, HYPS, REFS, n_samples=200)
        assert result["delta"] == 0.0
        assert result["p_value"] == 1.0
        assert result["delta_low"] == result["delta_high"] == 0.0


def test_paired_bootstrap_finds_a_clearly_better_system():
    hyps, refs = _synthetic_corpus(150, seed=4)
    refs = [r[0] for r in refs]
    better = [r if i % 3 else h for i, (h, r) in enumerate(zip(hyps, refs))]
    for name in ("bleu", "chrf", "rouge1", "rougeLsum"):
        result = metrics.paired_bootstrap(name, hyps, better, refs, n_samples=300)
        assert result["delta"] > 0
        assert result["p_value"] < 0.01
        assert 0 < result["delta_low"] <= result["delta"] <= result["delta_high"]
        assert result["b_low"] <= result["score_b"] <= result["b_high"]
    ter = metrics.paired_bootstrap("ter", hyps, better, refs, n_samples=300)
    assert ter["delta"] < 0 and ter["p_value"] < 0.01  # TER: lower is better


def test_paired_bootstrap_agrees_with_sacrebleu():
    from sacrebleu.significance import PairedTest

    hyps, refs = _synthetic_corpus(150, seed=5)
    refs = [r[0] for r in refs]
    rng = random.Random(0)
    other = [r if rng.random() < 0.1 else h for h, r in zip(hyps, refs)]
    ours = metrics.paired_bootstrap("bleu", hyps, other, refs, n_samples=500, seed=12345)
    _, scores = PairedTest(
        [("a", hyps), ("b", other)], {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=500
    )()
    theirs = scores["BLEU"][1]
    assert ours["score_b"] == theirs.score
    # same resampled indices; sacrebleu sums in float32, hence the tolerance
    assert ours["p_value"] == pytest.approx(theirs.p_value, abs=0.01)
    assert (ours["b_high"] - ours["b_low"]) / 2 == pytest.approx(theirs.ci, rel=0.05)


def test_importing_and_using_metrics_does_not_import_torch():
    code = (
        "import sys, numpy as np, metrics\n"
        "metrics.rouge(['a b'], ['a c']); metrics.bleu(['a b'], ['a c'])\n"
        "class T:\n"
        "    pad_token_id = 0\n"
        "    def batch_decode(self, ids, skip_special_tokens=True): return [' '.join(map(str, r)) for r in ids]\n"
        "metrics.Seq2SeqMetrics(T())((np.array([[1, 2]]), np.array([[1, -100]])))\n"
        "assert 'torch' not in sys.modules, 'metrics imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
