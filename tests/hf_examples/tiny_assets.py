"""A tiny translation task and a tiny Hugging Face model folder for the ported example script: nothing is
downloaded. The "translation" reverses a sentence of number words, so a few updates already move BLEU."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # Bart's ids: bos 0, pad 1, eos 2, unk 3


def write_translation_files(folder: Path, *, seed: int = 0) -> dict[str, Path]:
    """train/validation/test JSON-lines files of ``{"translation": {"en": ..., "de": ...}}``, the layout
    Hugging Face's translation example reads."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, count in (("train", 32), ("validation", 8), ("test", 8)):
        path = files[split] = folder / f"{split}.json"
        with path.open("w") as f:
            for _ in range(count):
                words = rng.choices(WORDS, k=rng.randint(2, 6))
                pair = {"en": " ".join(words), "de": " ".join(reversed(words))}
                f.write(json.dumps({"translation": pair}) + "\n")
    return files


def write_tiny_bart(folder: Path) -> Path:
    """A word-level fast tokenizer and a 2-layer BART with d_model 16, saved with ``save_pretrained`` so the
    script loads them with ``AutoTokenizer`` / ``AutoModelForSeq2SeqLM`` like a Hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],  # as BART's own tokenizer: no token_type_ids
    )
    config = BartConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
