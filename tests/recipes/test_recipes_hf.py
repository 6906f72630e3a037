"""A Hugging Face seq2seq model folder works as --model_name_or_path with a tokenizer of our own (transformers
installed only to write the folder, nothing fetched): the recipe imports it onto the s2s engine, the default
`--model_engine`; tests/recipes/test_hf_folder_recipe.py covers training, resuming and the transformers engine."""

import json
import math

import pytest

from tests.paths import REPO

pytest.importorskip("s2s.seq2seq_trainer", reason="waits for s2s.seq2seq_trainer.Seq2SeqTrainer (issue 3)")
transformers = pytest.importorskip("transformers")

from recipes import translation  # noqa: E402

MULTI30K = REPO / "recipes" / "data" / "multi30k"


def test_predict_with_a_hugging_face_bart_folder_and_our_tokenizer(tmp_path):
    from s2s.tokenization import train_joint_tokenizer

    pairs = [("ein kleiner hund läuft", "a small dog runs"), ("zwei große katzen", "two big cats")] * 20
    tokenizer = train_joint_tokenizer(pairs, vocab_size=60, hard_vocab_limit=False)
    tokenizer.save_pretrained(tmp_path / "tok")
    config = transformers.BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None,
    )  # fmt: skip
    transformers.BartForConditionalGeneration(config).save_pretrained(tmp_path / "bart")
    argv = [
        "--do_predict", "--predict_with_generate", "--model_name_or_path", str(tmp_path / "bart"),
        "--tokenizer_name_or_path", str(tmp_path / "tok"), "--test_file", str(MULTI30K / "test.jsonl.gz"),
        "--max_predict_samples", "3", "--num_beams", "2", "--source_lang", "de", "--target_lang", "en",
        "--max_source_length", "64", "--max_target_length", "64", "--val_max_target_length", "6",
        "--output_dir", str(tmp_path / "out"), "--dataset_cache_dir", str(tmp_path / "cache"),
        "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    results = translation.main(argv)
    assert math.isfinite(results["predict_bleu"]) and results["predict_gen_len"] <= 6
    assert len((tmp_path / "out" / "generated_predictions.txt").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["num_beams"] == 2

    # its 64 learned positions cannot take the default max_source_length: refused before predicting
    with pytest.raises(ValueError, match="64 positions"):
        translation.main([a for a in argv if a not in ("--max_source_length", "64", "--max_target_length")])
