"""A tiny Transformer learns a toy copy task with Seq2SeqTrainer and is scored by beam search (BLEU >= 95).

The whole path of the issue in one test: DataCollatorForSeq2Seq -> training -> evaluate with
predict_with_generate and 4 beams -> metrics.Seq2SeqMetrics decoding the ids -> held-out BLEU.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from metrics import Seq2SeqMetrics
from s2s.data_collator import DataCollatorForSeq2Seq
from s2s.seq2seq_trainer import Seq2SeqTrainer
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

models = pytest.importorskip("s2s.models", reason="needs s2s.models (the project's Transformer)")

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


class WordTokenizer:
    """pad 0, unk 1, bos 2, eos 3, then one id per word; refuses negative ids (as HF fast tokenizers do)."""

    pad_token_id, eos_token_id = 0, 3

    def __init__(self) -> None:
        self.vocab = ["<pad>", "<unk>", "<s>", "</s>", *WORDS]
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in text.split()] + [self.eos_token_id]

    def batch_decode(self, rows, skip_special_tokens: bool = True) -> list[str]:
        rows = np.asarray(rows).tolist()
        if any(i < 0 for row in rows for i in row):
            raise OverflowError("out of range integral type conversion attempted")
        return [" ".join(self.vocab[i] for i in row if i >= 4 or not skip_special_tokens) for row in rows]


def copy_task(tok: WordTokenizer, n: int, *, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        rows.append({"input_ids": tok.encode(text), "labels": tok.encode(text)})
    return rows


def test_tiny_transformer_learns_copy_and_beam_search_scores_bleu_above_95(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: one thread is several times faster than oversubscribing
    try:
        tok = WordTokenizer()
        train, held_out = copy_task(tok, 4000, seed=1), copy_task(tok, 96, seed=2)
        held_out_texts = {tuple(ex["input_ids"]) for ex in held_out}
        train = [ex for ex in train if tuple(ex["input_ids"]) not in held_out_texts]  # truly held out
        torch.manual_seed(0)
        config = models.TransformerConfig.preset(
            "tiny", vocab_size=len(tok.vocab), d_model=32, ffn_dim=64, dropout=0.0
        )
        model = models.TransformerForConditionalGeneration(config)
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True, save_strategy="no",
            max_steps=600, learning_rate=3e-3, lr_scheduler_type="constant", per_device_train_batch_size=32,
            per_device_eval_batch_size=32, logging_steps=100, sortish_sampler=True,
            predict_with_generate=True, generation_num_beams=4, generation_max_length=12,
        )  # fmt: skip
        trainer = Seq2SeqTrainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=held_out,
            data_collator=DataCollatorForSeq2Seq(tok, model=model),
            tokenizer=tok,
            compute_metrics=Seq2SeqMetrics(tok, metrics=("bleu",)),
        )
        trainer.train()
        metrics = trainer.evaluate()
    finally:
        torch.set_num_threads(threads)
    assert metrics["eval_bleu"] >= 95, metrics
    # copies are as long as their sources: 3-6 words plus eos
    assert metrics["eval_gen_len"] == pytest.approx(np.mean([len(ex["labels"]) for ex in held_out]), abs=0.2)
