"""Seq2SeqTrainer: generation settings, sampler choice, dataset order, clean labels, gen_len, saved predictions.

Tiny untrained models (d_model 16): these tests check plumbing, not quality (see
test_seq2seq_trainer_toy.py for a trained model reaching BLEU >= 95).
"""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from s2s.data_collator import DataCollatorForSeq2Seq
from s2s.models.packed import packing_available
from s2s.seq2seq_trainer import Seq2SeqTrainer, gather_in_dataset_order, mean_generated_length
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

models = pytest.importorskip("s2s.models", reason="needs s2s.models (the project's Transformer)")
generation = pytest.importorskip("s2s.generation", reason="needs s2s.generation (GenerationConfig)")

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


class WordTokenizer:
    """Word-level test tokenizer (pad 0, unk 1, bos 2, eos 3). Like Hugging Face's fast tokenizers it
    refuses negative ids, so a -100 reaching ``batch_decode`` fails the test."""

    pad_token_id, unk_token_id, bos_token_id, eos_token_id = 0, 1, 2, 3

    def __init__(self) -> None:
        self.vocab = ["<pad>", "<unk>", "<s>", "</s>", *WORDS]
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in text.split()] + [self.eos_token_id]

    def batch_decode(self, rows, skip_special_tokens: bool = True) -> list[str]:
        out = []
        for row in np.asarray(rows).tolist():
            if any(i < 0 for i in row):
                raise OverflowError(f"out of range integral type conversion attempted: {row}")
            out.append(" ".join(self.vocab[i] for i in row if i >= 4 or not skip_special_tokens))
        return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the machine's cores are shared: one intra-op thread is several times faster than oversubscribing
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tok() -> WordTokenizer:
    return WordTokenizer()


def make_data(tok: WordTokenizer, n: int, *, seed: int, lo: int = 1, hi: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        rows.append({"input_ids": tok.encode(" ".join(words)), "labels": tok.encode(" ".join(words[::-1]))})
    return rows


def tiny_model(tok: WordTokenizer, **gen: object):
    torch.manual_seed(0)
    config = models.TransformerConfig.preset(
        "tiny", vocab_size=len(tok.vocab), d_model=16, ffn_dim=32, num_heads=2, encoder_layers=1,
        decoder_layers=1, dropout=0.0,
    )  # fmt: skip
    model = models.TransformerForConditionalGeneration(config)
    model.generation_config.update(**gen)
    return model


def make_args(tmp_path, **overrides) -> Seq2SeqTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2, logging_steps=1,
        predict_with_generate=True,
    )  # fmt: skip
    return Seq2SeqTrainingArguments(**{**defaults, **overrides})


def make_trainer(tok, tmp_path, *, model=None, args=None, **kwargs) -> Seq2SeqTrainer:
    model = model or tiny_model(tok, max_new_tokens=6)
    kwargs.setdefault("data_collator", DataCollatorForSeq2Seq(tok, model=model))
    return Seq2SeqTrainer(model=model, args=args or make_args(tmp_path), tokenizer=tok, **kwargs)


def count_rows(eval_pred) -> dict[str, int]:
    return {"rows": len(eval_pred.predictions)}


class Recorder:
    """A ``generate`` spy: records the config it was called with and delegates."""

    def __init__(self, model) -> None:
        self.configs: list = []
        original = model.generate

        def generate(input_ids, attention_mask=None, generation_config=None, **kwargs):
            self.configs.append(generation_config)
            return original(
                input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs
            )

        model.generate = generate


# ------------------------------------------------------------------------------------------ generation settings
def test_precedence_call_kwargs_over_args_over_args_config_over_model(tok, tmp_path):
    model = tiny_model(tok, num_beams=3, max_new_tokens=5, length_penalty=0.7, no_repeat_ngram_size=2)
    args = make_args(
        tmp_path,
        generation_config={"num_beams": 2, "max_new_tokens": 4, "length_penalty": 0.5},
        generation_num_beams=4,
        generation_max_length=9,
    )
    trainer = make_trainer(tok, tmp_path, model=model, args=args, compute_metrics=count_rows)
    config = trainer.build_generation_config()
    assert config.num_beams == 4  # generation_num_beams beats args.generation_config and the model
    assert config.max_length == 9 and config.max_new_tokens is None  # one length limit: the higher layer's
    assert config.length_penalty == 0.5  # args.generation_config beats the model
    assert config.no_repeat_ngram_size == 2  # the model's own setting where nothing overrides it
    assert config.eos_token_id == 3 and config.decoder_start_token_id == 2  # token ids stay the model's
    called = trainer.build_generation_config(num_beams=1, max_new_tokens=3)
    assert (called.num_beams, called.max_new_tokens, called.max_length) == (1, 3, None)

    spy = Recorder(model)
    trainer.evaluate(make_data(tok, 6, seed=1), num_beams=2, length_penalty=2.0)
    assert {(c.num_beams, c.length_penalty, c.max_length) for c in spy.configs} == {(2, 2.0, 9)}
    trainer.evaluate(make_data(tok, 6, seed=1))  # the call kwargs applied to that call only
    assert spy.configs[-1].num_beams == 4 and spy.configs[-1].length_penalty == 0.5
    assert model.generation_config.num_beams == 3  # the model's config is never modified


def test_args_generation_config_from_a_saved_file_sets_only_its_keys(tok, tmp_path):
    path = tmp_path / "gen.json"
    path.write_text(json.dumps({"num_beams": 1, "max_new_tokens": 4}))
    model = tiny_model(tok, num_beams=3)
    trainer = make_trainer(tok, tmp_path, model=model, args=make_args(tmp_path, generation_config=str(path)))
    config = trainer.build_generation_config()
    assert config.num_beams == 1 and config.max_new_tokens == 4  # explicit 1 beats the model's 3


def test_bad_generation_settings_fail_when_the_trainer_is_built(tok, tmp_path):
    # each layer alone is valid; merged, min_length 30 > max_length 10 is not
    args = make_args(tmp_path, generation_config={"min_length": 30}, generation_max_length=10)
    with pytest.raises(ValueError, match="min_length"):
        make_trainer(tok, tmp_path, args=args)
    # the model asks for 4 returned sequences, generation_num_beams=2 cannot give them
    model = tiny_model(tok, num_beams=4, num_return_sequences=4)
    with pytest.raises(ValueError, match="num_return_sequences"):
        make_trainer(tok, tmp_path, model=model, args=make_args(tmp_path, generation_num_beams=2))


def test_unknown_or_misplaced_generation_kwargs_raise_naming_them(tok, tmp_path):
    trainer = make_trainer(tok, tmp_path)
    data = make_data(tok, 4, seed=0)
    with pytest.raises(ValueError, match=r"'num_beam' \(did you mean 'num_beams'\?\)"):
        trainer.evaluate(data, num_beam=2)
    with pytest.raises(
        ValueError, match="unknown generation option.*'max_lenght' \\(did you mean 'max_length'\\?\\)"
    ):
        trainer.predict(data, max_lenght=3)
    teacher_forced = make_trainer(tok, tmp_path, args=make_args(tmp_path, predict_with_generate=False))
    with pytest.raises(ValueError, match=r"\['num_beams'\] only apply with predict_with_generate"):
        teacher_forced.evaluate(data, num_beams=2)


def test_a_model_without_generate_is_refused_with_predict_with_generate(tok, tmp_path):
    class NoGenerate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, input_ids, labels=None):
            return {"logits": self.linear(input_ids.float())}

    with pytest.raises(ValueError, match="NoGenerate has no generate"):
        Seq2SeqTrainer(
            model=NoGenerate(), args=make_args(tmp_path), data_collator=DataCollatorForSeq2Seq(tok)
        )


# ------------------------------------------------------------------------------------------ order and labels
def test_predictions_come_back_in_dataset_order_and_labels_carry_no_minus_100(tok, tmp_path):
    data = make_data(tok, 23, seed=3)  # lengths vary, so longest-first order differs from dataset order
    seen = {}

    def compute_metrics(eval_pred):
        seen["preds"], seen["labels"] = eval_pred.predictions, eval_pred.label_ids
        assert (eval_pred.label_ids != -100).all() and (eval_pred.predictions != -100).all()
        return {"decoded": len(tok.batch_decode(eval_pred.label_ids))}

    model = tiny_model(tok, max_new_tokens=6)
    trainer = make_trainer(tok, tmp_path, model=model, compute_metrics=compute_metrics)
    batches = []
    original = trainer._generate
    trainer._generate = lambda inputs: batches.append(inputs["input_ids"].shape[1]) or original(inputs)
    metrics = trainer.evaluate(data)
    assert metrics["eval_decoded"] == 23
    assert batches == sorted(batches, reverse=True) and batches[0] > batches[-1]  # longest first

    labels = seen["labels"]
    for i, example in enumerate(data):  # row i is example i, padded with the pad id
        n = len(example["labels"])
        assert labels[i, :n].tolist() == example["labels"] and (labels[i, n:] == tok.pad_token_id).all()
    # each prediction is what generating that example on its own gives
    for i in (0, 7, 22):
        alone = model.generate(torch.tensor([data[i]["input_ids"]]), max_new_tokens=6)[0].tolist()
        row = seen["preds"][i].tolist()
        assert row[: len(alone)] == alone and all(t == tok.pad_token_id for t in row[len(alone) :])

    out = trainer.predict(data)
    np.testing.assert_array_equal(out.predictions, seen["preds"])
    np.testing.assert_array_equal(out.label_ids, labels)


def test_evaluation_and_prediction_decode_every_batch_with_one_weight_pack(tok, tmp_path):
    """The weights do not change while evaluate/predict decode, so the batches share the decoder's packed
    weights (made once per row count) instead of packing them again per batch; the block ends with the loop."""
    model = tiny_model(tok, max_new_tokens=6)
    trainer = make_trainer(tok, tmp_path, model=model, compute_metrics=count_rows)
    builds = []
    original = trainer._generate
    trainer._generate = lambda inputs: builds.append(model._reused_packs.builds) or original(inputs)
    for run in (trainer.evaluate, trainer.predict):
        builds.clear()
        run(make_data(tok, 23, seed=3))  # batches of 4, 4, 4, 4, 4 and 3 rows
        assert len(builds) == 6 and model._reused_packs is None
        if packing_available(torch.device("cpu"), torch.float32):
            assert builds == [0, 1, 1, 1, 1, 1]  # packed for the first batch, kept for the next


def test_gather_drops_repeats_and_restores_dataset_order():
    # rows produced in a sharded, length-sorted order with a padding repeat of example 2
    index = np.array([2, 0, 3, 1, 2])
    preds = np.array([[20], [0], [30], [10], [21]])
    labels = np.array([[2], [0], [3], [1], [2]])
    out_index, (out_preds, out_labels, none) = gather_in_dataset_order(
        index, (preds, labels, None), pad_values=(0, -100, 0)
    )
    assert out_index.tolist() == [0, 1, 2, 3] and none is None
    assert out_preds[:, 0].tolist() == [0, 10, 20, 30] and out_labels[:, 0].tolist() == [0, 1, 2, 3]


def test_generation_kwargs_given_as_none_fall_back_to_the_arguments(tok, tmp_path):
    """Hugging Face's example scripts pass ``num_beams=None`` when the user set none."""
    model = tiny_model(tok, num_beams=3)
    args = make_args(tmp_path, generation_num_beams=2, generation_max_length=5)
    trainer = make_trainer(tok, tmp_path, model=model, args=args, compute_metrics=count_rows)
    spy = Recorder(model)
    data = make_data(tok, 4, seed=8)
    trainer.evaluate(data, max_length=None, num_beams=None)
    trainer.predict(data, num_beams=None, length_penalty=None)
    assert [(c.num_beams, c.max_length) for c in spy.configs] == [(2, 5), (2, 5)]
    trainer.evaluate(data, num_beams=None, max_length=4)  # a given value still wins
    assert (spy.configs[-1].num_beams, spy.configs[-1].max_length) == (2, 4)
    teacher_forced = make_trainer(tok, tmp_path, args=make_args(tmp_path, predict_with_generate=False))
    assert "eval_loss" in teacher_forced.evaluate(data, num_beams=None)  # nothing given: nothing to refuse
    with pytest.raises(ValueError, match="only apply with predict_with_generate=True"):
        teacher_forced.evaluate(data, num_beams=2)


def test_processing_class_is_the_tokenizer(tok, tmp_path):
    model = tiny_model(tok)
    args = make_args(tmp_path, save_predictions=True)
    collator = DataCollatorForSeq2Seq(tok, model=model)
    trainer = Seq2SeqTrainer(model=model, args=args, processing_class=tok, data_collator=collator)
    assert trainer.tokenizer is tok and trainer.processing_class is tok
    trainer.predict(make_data(tok, 3, seed=9), metric_key_prefix="test")
    row = json.loads((tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()[0])
    assert isinstance(row["source"], str)  # decoded with the processing class
    with pytest.raises(ValueError, match="tokenizer= or as processing_class=, not both"):
        Seq2SeqTrainer(model=model, args=args, tokenizer=tok, processing_class=tok, data_collator=collator)


def test_generated_predictions_start_with_the_decoder_start_token(tok, tmp_path):
    """As Hugging Face returns them: ``generate``'s rows, start token first, padded with the pad id."""
    model = tiny_model(tok, max_length_a=1.0, max_length_b=0)  # as many new tokens as source tokens
    trainer = make_trainer(tok, tmp_path, model=model)
    preds = trainer.predict(make_data(tok, 9, seed=10)).predictions
    start = model.generation_config.decoder_start_token_id
    assert start is not None and start != tok.pad_token_id
    assert (preds[:, 0] == start).all() and not (preds < 0).any()
    assert (preds[:, 1:] == tok.pad_token_id).any()  # rows of different lengths, padded with the pad id


def test_gen_len_counts_generated_tokens_without_start_token_or_pads():
    preds = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    assert mean_generated_length(preds, pad_id=0, start_id=2) == 2.5
    assert (
        mean_generated_length(preds[:, 1:], pad_id=0, start_id=2) == 2.5
    )  # no start column: nothing dropped


def test_eval_gen_len_and_token_weighted_loss_when_asked(tok, tmp_path):
    data = make_data(tok, 10, seed=4)
    trainer = make_trainer(
        tok, tmp_path, compute_metrics=lambda p: {"n": len(p.predictions)}, compute_generate_loss=True
    )
    metrics = trainer.evaluate(data)
    preds = trainer.predict(data).predictions
    expected = np.mean([np.count_nonzero(row[1:] != tok.pad_token_id) for row in preds])
    assert metrics["eval_gen_len"] == pytest.approx(expected)
    # the loss is the corpus-level mean over target tokens, not a mean of per-batch means
    model = trainer.model
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ex in data:
            labels = torch.tensor([ex["labels"]])
            out = model(input_ids=torch.tensor([ex["input_ids"]]), labels=labels)
            total += float(out.loss) * labels.numel()
            tokens += labels.numel()
    assert metrics["eval_loss"] == pytest.approx(total / tokens, rel=1e-4)


def test_loss_with_generation_by_default_and_skipped_on_request(tok, tmp_path):
    data = make_data(tok, 8, seed=5)
    forwards = []

    def with_counter(trainer):
        hook = trainer.model.register_forward_hook(lambda *a: forwards.append(1))
        return hook

    metrics_fn = count_rows
    trainer = make_trainer(tok, tmp_path, compute_metrics=metrics_fn)  # labels: the loss, as Hugging Face
    with_counter(trainer)
    metrics = trainer.evaluate(data)
    assert "eval_loss" in metrics and "eval_rows" in metrics and len(forwards) == 2  # one per batch, no more
    assert "predict_loss" in trainer.predict(data, metric_key_prefix="predict").metrics

    forwards.clear()
    generate_only = make_trainer(tok, tmp_path, compute_metrics=metrics_fn, compute_generate_loss=False)
    with_counter(generate_only)
    metrics = generate_only.evaluate(data)
    assert "eval_loss" not in metrics and forwards == []  # generation only: no teacher-forced pass

    no_labels = [{"input_ids": ex["input_ids"]} for ex in data]
    assert "test_loss" not in trainer.predict(no_labels).metrics  # nothing to compare with

    no_metrics = make_trainer(tok, tmp_path)  # without compute_metrics the loss is all there is
    assert "eval_loss" in no_metrics.evaluate(data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"metric_for_best_model": "eval_loss"},
        {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "steps"},  # steps on the loss
    ],
)
def test_generate_loss_cannot_be_skipped_when_training_reads_it(tok, tmp_path, overrides):
    args = make_args(tmp_path, **overrides)
    with pytest.raises(ValueError, match="compute_generate_loss=False but metric_for_best_model=.*loss"):
        make_trainer(tok, tmp_path, args=args, compute_metrics=count_rows, compute_generate_loss=False)
    trainer = make_trainer(tok, tmp_path, args=args, compute_metrics=count_rows)  # the default computes it
    assert "eval_loss" in trainer.evaluate(make_data(tok, 4, seed=7))


def test_save_predictions_writes_jsonl_in_dataset_order(tok, tmp_path):
    data = make_data(tok, 9, seed=6)
    trainer = make_trainer(tok, tmp_path, args=make_args(tmp_path, save_predictions=True))
    out = trainer.predict(data, metric_key_prefix="test")
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in rows] == list(range(9))
    for row, example, pred in zip(rows, data, out.predictions):
        assert row["source"] == tok.batch_decode([example["input_ids"]])[0]
        assert row["reference"] == tok.batch_decode([example["labels"]])[0]
        assert row["hypothesis"] == tok.batch_decode([pred])[0]


def test_preprocess_logits_for_metrics_receives_generated_ids_per_batch(tok, tmp_path):
    shapes = []

    def preprocess(ids, labels):
        shapes.append(tuple(ids.shape))
        return ids[:, 1:]  # e.g. drop the start token

    data = make_data(tok, 10, seed=7)
    trainer = make_trainer(tok, tmp_path, preprocess_logits_for_metrics=preprocess)
    out = trainer.predict(data)
    assert [s[0] for s in shapes] == [4, 4, 2]  # per batch, before anything is kept
    full = make_trainer(tok, tmp_path).predict(data).predictions
    np.testing.assert_array_equal(out.predictions, full[:, 1:])


# ------------------------------------------------------------------------------------------ sampler
def _training_order(tok, tmp_path, *, sortish: bool) -> list[list[int]]:
    data = make_data(tok, 48, seed=8, lo=1, hi=12)
    for i, ex in enumerate(data):
        ex["input_ids"] = ex["input_ids"]  # lengths differ; record which examples each batch holds
        ex["index"] = i
    seen: list[list[int]] = []
    collator = DataCollatorForSeq2Seq(tok)

    def collate(features):
        seen.append([f["index"] for f in features])
        return collator([{k: v for k, v in f.items() if k != "index"} for f in features])

    args = make_args(tmp_path, sortish_sampler=sortish, max_steps=12, seed=1, predict_with_generate=False)
    trainer = make_trainer(tok, tmp_path, args=args, train_dataset=data, data_collator=collate)
    trainer.train()
    return seen


def test_sortish_sampler_really_changes_the_training_order(tok, tmp_path, caplog):
    plain = _training_order(tok, tmp_path, sortish=False)
    again = _training_order(tok, tmp_path, sortish=False)
    assert plain == again  # the flag off: the usual (seeded) random order
    with caplog.at_level(logging.INFO, logger="s2s"):
        sortish = _training_order(tok, tmp_path, sortish=True)
    assert sortish != plain and sorted(sum(sortish, [])) == sorted(sum(plain, []))
    assert "SortishSampler" in caplog.text  # the sampler in use is logged at train start

    # sortish batches are sorted blocks: far less padding than the random ones
    data = make_data(tok, 48, seed=8, lo=1, hi=12)

    def padding(batches):
        return sum(max(len(data[i]["input_ids"]) for i in b) * len(b) for b in batches)

    assert padding(sortish) < padding(plain)


def test_generation_settings_are_logged_at_train_start(tok, tmp_path, caplog):
    args = make_args(tmp_path, generation_num_beams=3, max_steps=1)
    trainer = make_trainer(tok, tmp_path, args=args, train_dataset=make_data(tok, 8, seed=9))
    with caplog.at_level(logging.INFO, logger="s2s"):
        trainer.train()
    assert "evaluation generates with:" in caplog.text and "num_beams=3" in caplog.text


def test_n_best_predictions_keep_one_row_per_example(tok, tmp_path):
    data = make_data(tok, 7, seed=10)
    args = make_args(tmp_path, save_predictions=True)
    trainer = make_trainer(tok, tmp_path, args=args, compute_metrics=count_rows)
    out = trainer.predict(data, num_beams=3, num_return_sequences=2)
    assert out.predictions.shape[:2] == (7, 2) and out.metrics["test_rows"] == 7
    model = trainer.model
    best = model.generate(
        torch.tensor([data[4]["input_ids"]]), num_beams=3, num_return_sequences=2, max_new_tokens=6
    )
    for k in range(2):
        row = out.predictions[4, k].tolist()
        assert row[: best.shape[1]] == best[k].tolist()
    rows = (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()
    assert len(rows) == 7 and len(json.loads(rows[4])["hypothesis"]) == 2
