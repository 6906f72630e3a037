"""Seq2SeqTrainer with Hugging Face encoder-decoder models (tiny T5 and BART built from a config, no download):
predict_with_generate, generation settings on a transformers GenerationConfig, order and pad ids."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from s2s.data_collator import DataCollatorForSeq2Seq
from s2s.seq2seq_trainer import Seq2SeqTrainer
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

transformers = pytest.importorskip("transformers")

VOCAB = 40


class IdTokenizer:
    """Ids as text ("5 17 9"); pad 0 as in T5 and our models; refuses negative ids."""

    pad_token_id = 0

    def batch_decode(self, rows, skip_special_tokens: bool = True) -> list[str]:
        rows = np.asarray(rows).tolist()
        if any(i < 0 for row in rows for i in row):
            raise OverflowError("out of range integral type conversion attempted")
        return [" ".join(str(i) for i in row if i > 3 or not skip_special_tokens) for row in rows]


def t5():
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(config)


def bart():
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, forced_bos_token_id=None,
        forced_eos_token_id=None,
    )  # fmt: skip
    return transformers.BartForConditionalGeneration(config)


def data(n: int, *, eos: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(4, VOCAB) for _ in range(rng.randint(2, 9))] + [eos]
        out.append({"input_ids": ids, "labels": ids[::-1][1:] + [eos]})
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("build", "eos"), [(t5, 1), (bart, 3)], ids=["t5", "bart"])
def test_hf_encoder_decoder_predicts_with_generate_in_dataset_order(build, eos, tmp_path):
    torch.manual_seed(0)
    model = build()
    tok = IdTokenizer()
    examples = data(11, eos=eos)
    seen = {}

    def compute_metrics(eval_pred):
        seen["labels"] = eval_pred.label_ids
        assert (eval_pred.label_ids != -100).all() and (eval_pred.predictions != -100).all()
        tok.batch_decode(eval_pred.predictions), tok.batch_decode(eval_pred.label_ids)
        return {"rows": len(eval_pred.predictions)}

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2, predict_with_generate=True,
        generation_max_length=8, generation_num_beams=2,
    )  # fmt: skip
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        eval_dataset=examples,
        data_collator=DataCollatorForSeq2Seq(tok, model=model),
        tokenizer=tok,
        compute_metrics=compute_metrics,
        compute_generate_loss=True,
    )
    config = trainer.build_generation_config()
    assert isinstance(config, transformers.GenerationConfig) and (config.num_beams, config.max_length) == (
        2,
        8,
    )
    trainer.train()
    metrics = trainer.evaluate(num_beams=3, max_new_tokens=5)
    assert metrics["eval_rows"] == 11 and np.isfinite(metrics["eval_loss"])
    assert 0 < metrics["eval_gen_len"] <= 5

    out = trainer.predict(examples, num_beams=3, max_new_tokens=5)
    assert out.predictions.shape[0] == 11 and out.predictions.shape[1] <= 6  # start token + 5 new
    model.eval()
    for i in (0, 5, 10):  # row i is example i: the same as generating it alone
        alone = model.generate(torch.tensor([examples[i]["input_ids"]]), num_beams=3, max_new_tokens=5)
        alone = alone[0].tolist()
        row = out.predictions[i].tolist()
        assert row[: len(alone)] == alone and all(t == 0 for t in row[len(alone) :])
    for i, ex in enumerate(examples):
        n = len(ex["labels"])
        assert seen["labels"][i, :n].tolist() == ex["labels"] and (seen["labels"][i, n:] == 0).all()


def test_hf_generation_options_are_checked_at_construction_and_per_call(tmp_path):
    model = t5()
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", predict_with_generate=True,
        generation_config={"max_length_b": 4},
    )  # fmt: skip
    # a project option that transformers' GenerationConfig does not have fails when the trainer is built
    with pytest.raises(ValueError, match="'max_length_b'.*GenerationConfig"):
        Seq2SeqTrainer(model=model, args=args, data_collator=DataCollatorForSeq2Seq(IdTokenizer()))
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", predict_with_generate=True
    )
    trainer = Seq2SeqTrainer(model=model, args=args, data_collator=DataCollatorForSeq2Seq(IdTokenizer()))
    with pytest.raises(ValueError, match="'num_beam' \\(did you mean 'num_beams'\\?\\)"):
        trainer.predict(data(3, eos=1), num_beam=2)
