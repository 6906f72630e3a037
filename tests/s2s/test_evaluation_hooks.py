"""The override points of the generic evaluation loop: a Trainer subclass that changes one step changes
what evaluate()/predict() return, without repeating the loop (this is how Seq2SeqTrainer is built)."""

import json

import numpy as np
import pytest

from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import PAD, ToyCollator, ToySeq2Seq, make_examples, toy_args


@pytest.fixture
def eval_set():
    return make_examples(7, seed=11, max_len=8)


def make(cls, tmp_path, **kwargs):
    overrides = kwargs.pop("args", {})
    return cls(
        model=ToySeq2Seq(),
        args=toy_args(tmp_path, per_device_eval_batch_size=2, **overrides),
        data_collator=ToyCollator(),
        **kwargs,
    )


class Hooked(Trainer):
    """Reverse evaluation order, argmax per batch, -100 -> pad, a metric of its own, its own writer."""

    written: list[str]

    def get_eval_order(self, dataset):
        return list(range(len(dataset)))[::-1]

    def predictions_of_batch(self, logits, labels, *, batch_size):
        assert logits.shape[0] == batch_size
        return super().predictions_of_batch(logits, labels, batch_size=batch_size).argmax(-1)

    def keeps_eval_inputs(self):
        return True

    def postprocess_label_ids(self, label_ids):
        return np.where(label_ids == -100, PAD, label_ids)

    def extra_eval_metrics(self, predictions, label_ids):
        return {"rows": float(len(predictions)), "answer": 42.0}

    def save_predictions(self, output, metric_key_prefix):
        self.written = [metric_key_prefix, len(output.predictions), output.inputs is not None]


def test_each_hook_changes_the_output_and_order_is_restored(tmp_path, eval_set):
    plain = make(Trainer, tmp_path).predict(eval_set)
    seen = {}

    def compute_metrics(pred):
        seen["labels"] = pred.label_ids
        return {"answer": 0.0}

    trainer = make(Hooked, tmp_path, compute_metrics=compute_metrics, args={"save_predictions": True})
    loader = trainer.get_test_dataloader(eval_set)
    assert loader.sampler.order == list(range(len(eval_set)))[::-1]
    out = trainer.predict(eval_set)
    # Evaluated in reverse, returned in dataset order: the argmax of the plain trainer's logits.
    for i, example in enumerate(eval_set):
        n = len(example["labels"])
        np.testing.assert_array_equal(out.predictions[i, :n], plain.predictions[i, :n].argmax(-1))
    assert (seen["labels"] != -100).all() and (plain.label_ids == -100).any()
    assert (out.label_ids == np.where(plain.label_ids == -100, PAD, plain.label_ids)).all()
    assert out.metrics["test_rows"] == len(eval_set)
    assert out.metrics["test_answer"] == 42.0  # the trainer's own metric wins over compute_metrics'
    assert trainer.written == ["test", len(eval_set), True]


def test_default_save_predictions_writes_ids_and_labels(tmp_path, eval_set):
    trainer = make(Trainer, tmp_path, args={"save_predictions": True})
    trainer.predict(eval_set, metric_key_prefix="dev")
    rows = [json.loads(line) for line in (tmp_path / "dev_predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(len(eval_set)))
    assert rows[3]["label"][: len(eval_set[3]["labels"])] == eval_set[3]["labels"]


def test_gather_hook_sees_each_rows_dataset_index(tmp_path, eval_set):
    calls = []

    class Recording(Trainer):
        def gather_eval_rows(self, index, parts, *, pad_values, sharded):
            calls.append((index.tolist(), sharded, pad_values))
            return super().gather_eval_rows(index, parts, pad_values=pad_values, sharded=sharded)

    make(Recording, tmp_path, args={"group_by_length": True}).predict(eval_set)
    ((index, sharded, pad_values),) = calls
    assert sorted(index) == list(range(len(eval_set))) and index != sorted(index)  # longest first
    assert sharded and pad_values == (PAD, -100, PAD)
