"""metrics on real corpora (slow): SAMSum lead-3 ROUGE figures, and exact parity on SAMSum and Multi30k."""

import functools
import json
import random
import statistics

import pytest
import sacrebleu
from rouge_score import rouge_scorer

import metrics

pytestmark = pytest.mark.slow

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def samsum_lead3(shared_data):
    return _samsum_lead3(shared_data / "samsum" / "test.jsonl")


@pytest.fixture
def multi30k_perturbed(shared_data):
    return _multi30k_perturbed(shared_data / "multi30k" / "test.jsonl")


@functools.cache  # shared_data is function-scoped (it skips per test); read each corpus once per session
def _samsum_lead3(path):
    rows = _jsonl(path)
    predictions = ["\n".join(r["document"].split("\n")[:3]) for r in rows]
    return predictions, [r["summary"] for r in rows]


@functools.cache
def _multi30k_perturbed(path):
    """Multi30k test references and seeded perturbations of them: dropped, swapped and replaced words."""
    refs = [r["translation"]["en"] for r in _jsonl(path)]
    rng = random.Random(2024)
    vocab = sorted({w for r in refs for w in r.split()})

    def perturb(sentence: str) -> str:
        words = sentence.split()
        for _ in range(rng.randint(0, 3)):
            op, i = rng.random(), rng.randrange(len(words))
            if op < 0.3 and len(words) > 1:
                del words[i]
            elif op < 0.6 and i + 1 < len(words):
                words[i], words[i + 1] = words[i + 1], words[i]
            else:
                words[i] = rng.choice(vocab)
        return " ".join(words)

    return [perturb(r) for r in refs], refs


@functools.cache
def _samsum_rouge(path):
    return metrics.rouge(*_samsum_lead3(path))


def test_samsum_lead3_rouge_figures(samsum_lead3, shared_data):
    predictions, references = samsum_lead3
    assert len(predictions) == 819
    ours = _samsum_rouge(shared_data / "samsum" / "test.jsonl")
    assert [round(ours[t], 2) for t in ROUGE_TYPES] == [31.31, 8.68, 24.17, 27.57]
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per_example = [scorer.score(r, p) for p, r in zip(predictions, references)]
    for t in ROUGE_TYPES:
        assert ours[t] == 100 * statistics.mean(s[t].fmeasure for s in per_example)


def test_samsum_parallel_and_batched_rouge_are_identical(samsum_lead3, shared_data):
    predictions, references = samsum_lead3
    serial = _samsum_rouge(shared_data / "samsum" / "test.jsonl")
    assert metrics.rouge(predictions, references, num_workers=2) == serial
    batches = [(i, min(i + 100, len(predictions))) for i in range(0, len(predictions), 100)]
    merged = sum(metrics.rouge_stats(predictions[a:b], references[a:b]) for a, b in reversed(batches))
    assert merged.compute() == serial


def test_samsum_bleu_and_chrf_equal_sacrebleu(samsum_lead3):
    predictions, references = samsum_lead3
    ours = metrics.bleu(predictions, references)
    theirs = sacrebleu.corpus_bleu(predictions, [references])
    assert (ours["bleu"], ours["bp"], ours["sys_len"]) == (theirs.score, theirs.bp, theirs.sys_len)
    assert (
        metrics.chrf(predictions, references)["chrf"]
        == sacrebleu.corpus_chrf(predictions, [references]).score
    )


def test_multi30k_perturbed_parity_with_sacrebleu_and_rouge_score(multi30k_perturbed):
    hyps, refs = multi30k_perturbed
    assert len(hyps) == 1000 and hyps != refs
    bleu = metrics.bleu(hyps, refs)
    theirs = sacrebleu.corpus_bleu(hyps, [refs])
    assert bleu["bleu"] == theirs.score
    assert [bleu[f"precision_{n}"] for n in range(1, 5)] == theirs.precisions
    assert metrics.bleu(hyps, refs, lowercase=True, tokenize="intl")["bleu"] == (
        sacrebleu.corpus_bleu(hyps, [refs], lowercase=True, tokenize="intl").score
    )
    assert metrics.chrf(hyps, refs)["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert (
        metrics.chrf(hyps, refs, word_order=2)["chrf++"]
        == sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score
    )
    assert metrics.ter(hyps, refs)["ter"] == sacrebleu.corpus_ter(hyps, [refs]).score
    rouge = metrics.rouge(hyps, refs)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per_example = [scorer.score(r, h) for h, r in zip(hyps, refs)]
    for t in ROUGE_TYPES:
        assert rouge[t] == 100 * statistics.mean(s[t].fmeasure for s in per_example)
    sentence = metrics.bleu(hyps[:200], refs[:200], sentence=True)
    assert [s["bleu"] for s in sentence] == [
        sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)
    ][:200]


def test_multi30k_batched_statistics_equal_corpus(multi30k_perturbed):
    hyps, refs = multi30k_perturbed
    rng = random.Random(5)
    cuts = sorted(rng.sample(range(1, len(hyps)), 9))
    bounds = list(zip([0, *cuts], [*cuts, len(hyps)]))
    for stats_fn, score_fn in [
        (metrics.bleu_stats, metrics.bleu),
        (metrics.chrf_stats, metrics.chrf),
        (metrics.ter_stats, metrics.ter),
    ]:
        merged = sum(stats_fn(hyps[a:b], refs[a:b]) for a, b in bounds)
        assert merged.compute() == score_fn(hyps, refs)


def test_multi30k_paired_bootstrap(multi30k_perturbed):
    hyps, refs = multi30k_perturbed
    better = [r if i % 4 == 0 else h for i, (h, r) in enumerate(zip(hyps, refs))]
    result = metrics.paired_bootstrap("bleu", hyps, better, refs, n_samples=1000)
    assert result["delta"] > 0 and result["p_value"] < 0.01 and result["delta_low"] > 0
    rouge = metrics.paired_bootstrap("rougeL", hyps, better, refs, n_samples=1000)
    assert rouge["delta"] > 0 and rouge["p_value"] < 0.01
