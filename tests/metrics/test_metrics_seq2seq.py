"""Seq2SeqMetrics: ids, -100 padding and logits in; the same scores as on the decoded strings out."""

from types import SimpleNamespace

import numpy as np
import pytest

import metrics

WORDS = [
    "<pad>",
    "<unk>",
    "<s>",
    "</s>",
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "a",
    "dog",
    "ran",
    "park",
    "in",
    ".",
]
PAD, BOS, EOS = 0, 2, 3


class FakeTokenizer:
    """Word-level, special ids 0-3; like Hugging Face it cannot decode negative ids (so -100 must be gone)."""

    pad_token_id = PAD

    def batch_decode(self, ids, skip_special_tokens=True):
        out = []
        for row in ids:
            if any(i < 0 for i in row):
                raise OverflowError("out of range integral type conversion attempted")
            out.append(" ".join(WORDS[i] for i in row if not (skip_special_tokens and i <= EOS)) + "  ")
        return out


def _ids(sentence: str) -> list[int]:
    return [WORDS.index(w) for w in sentence.split()]


PRED_TEXT = ["the cat sat on the mat .", "a dog ran", "the dog sat in the park .", "cat"]
REF_TEXT = ["the cat sat on a mat .", "a dog ran in the park .", "the dog sat in the park .", "a cat ran"]


def _pad(rows: list[list[int]], value: int, width: int | None = None) -> np.ndarray:
    width = width or max(map(len, rows))
    return np.array([r + [value] * (width - len(r)) for r in rows])


def _generated(texts, *, pad=PAD, width=None):
    """Generate-style rows: decoder start, tokens, eos, then padding."""
    return _pad([[BOS, *_ids(t), EOS] for t in texts], pad, width)


def _labels(texts):
    return _pad([[*_ids(t), EOS] for t in texts], -100)


def _one_hot_logits(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*ids.shape, len(WORDS))).astype(np.float32)
    np.put_along_axis(logits, ids[..., None], 10.0, axis=-1)
    return logits


@pytest.fixture
def expected():
    return {
        "bleu": metrics.bleu(PRED_TEXT, REF_TEXT)["bleu"],
        "chrf": metrics.chrf(PRED_TEXT, REF_TEXT)["chrf"],
        "ter": metrics.ter(PRED_TEXT, REF_TEXT)["ter"],
        **{k: v for k, v in metrics.rouge(PRED_TEXT, REF_TEXT).items() if "_" not in k},
    }


def test_generated_ids_with_minus_100_padding(expected):
    compute = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("bleu", "chrf", "ter", "rouge"))
    preds = _generated(PRED_TEXT, pad=-100, width=12)  # cross-batch padding of an eval container
    result = compute((preds, _labels(REF_TEXT)))
    assert {k: result[k] for k in expected} == expected
    # generated tokens that are not padding: bos + words + eos
    assert result["gen_len"] == np.mean([len(t.split()) + 2 for t in PRED_TEXT])


def test_decoding_without_the_metric_would_have_crashed():
    with pytest.raises(OverflowError):
        FakeTokenizer().batch_decode(_labels(REF_TEXT).tolist())


def test_logits_and_argmax_ids_give_the_same_scores(expected):
    compute = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("bleu", "rouge"))
    ids = _generated(PRED_TEXT)
    from_ids = compute(SimpleNamespace(predictions=ids, label_ids=_labels(REF_TEXT), inputs=None))
    # a model that returns (logits, encoder states): the first element is the logits
    logits = (_one_hot_logits(ids), np.zeros((len(ids), 3, 4)))
    from_logits = compute(SimpleNamespace(predictions=logits, label_ids=_labels(REF_TEXT)))
    assert from_logits == from_ids
    assert from_ids["bleu"] == expected["bleu"] and from_ids["rougeL"] == expected["rougeL"]
    assert from_ids["gen_len"] == np.count_nonzero(ids != PAD) / len(ids)


def test_lists_and_ragged_rows_are_accepted(expected):
    compute = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("bleu",))
    ragged_preds = [[BOS, *_ids(t), EOS] for t in PRED_TEXT]
    ragged_labels = [[*_ids(t), EOS] for t in REF_TEXT]
    assert compute((ragged_preds, ragged_labels))["bleu"] == expected["bleu"]
    float_ids = _generated(PRED_TEXT).astype(np.float64)  # ids that went through a float container
    assert compute((float_ids, _labels(REF_TEXT)))["bleu"] == expected["bleu"]
    with pytest.raises(ValueError, match="not integral"):
        compute((float_ids + 0.5, _labels(REF_TEXT)))


def test_per_batch_calls_merge_to_the_all_at_once_result():
    compute = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("bleu", "chrf++", "ter", "rouge"))
    preds, labels = _generated(PRED_TEXT, pad=-100), _labels(REF_TEXT)
    at_once = compute((preds, labels))
    assert compute((preds[:1], labels[:1]), compute_result=False) == {}
    assert compute((preds[1:3], labels[1:3]), compute_result=False) == {}
    assert compute((preds[3:], labels[3:]), compute_result=True) == at_once
    # the state is reset after the final call
    assert compute((preds, labels), compute_result=True) == at_once


def test_sentence_per_line_splits_for_rougelsum():
    pred, ref = "the cat sat . a dog ran .", "a dog ran . the cat sat ."
    ids, labels = _generated([pred]), _labels([ref])
    plain = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("rouge",))((ids, labels))
    split = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("rouge",), sentence_per_line=True)((ids, labels))
    assert plain["rougeLsum"] < 100.0 == split["rougeLsum"]
    assert plain["rouge1"] == split["rouge1"] == 100.0


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("meteor",))
    no_pad = SimpleNamespace(pad_token_id=None, batch_decode=lambda ids, skip_special_tokens=True: [])
    with pytest.raises(ValueError, match="pad_token_id"):
        metrics.Seq2SeqMetrics(no_pad)
    with pytest.raises(ValueError, match="label_ids"):
        metrics.Seq2SeqMetrics(FakeTokenizer())(
            SimpleNamespace(predictions=_generated(PRED_TEXT), label_ids=None)
        )


def test_works_with_a_hugging_face_tokenizer():
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(cleanup=False)  # joins words with spaces
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    ours = metrics.Seq2SeqMetrics(FakeTokenizer(), metrics=("bleu", "rouge"))
    theirs = metrics.Seq2SeqMetrics(hf, metrics=("bleu", "rouge"))
    batch = (_generated(PRED_TEXT, pad=-100), _labels(REF_TEXT))
    assert theirs(batch) == ours(batch)


def test_works_with_the_project_tokenizer():
    tokenization = pytest.importorskip("s2s.tokenization")
    texts = [
        "the cat sat on the mat.",
        "a dog ran in the park.",
        "two men are talking.",
        "a woman cooks.",
    ] * 20
    tok = tokenization.train_tokenizer(texts, vocab_size=30, backend="sentencepiece")
    labels = tok(texts[:4], text_target=texts[:4], padding=True)["labels"]  # padded with -100
    compute = metrics.Seq2SeqMetrics(tok, metrics=("bleu", "rouge"))
    perfect = compute((labels, labels))
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge1"] == 100.0
    shuffled = compute((labels[::-1], labels))
    assert shuffled["bleu"] < 10 and shuffled["rouge1"] < 50
    assert perfect["gen_len"] == np.mean([sum(i != -100 for i in row) for row in labels])
