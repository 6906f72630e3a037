"""Text <-> ids for s2s: one `Tokenizer` interface over sentencepiece and Hugging Face `tokenizers`.

    tok = train_joint_tokenizer(pairs, vocab_size=8000)           # or train_tokenizer(texts, ...)
    batch = tok(sources, text_target=targets, truncation=True, max_length=128, padding=True, return_tensors="pt")
    tok.save_pretrained("out/tokenizer"); tok = load_tokenizer("out/tokenizer")
    tok.batch_decode(generated_ids)                                # -100 and special ids dropped

Special ids follow docs/architecture.md: pad=0, unk=1, bos=2, eos=3; sources and targets end with eos.
"""

from s2s.tokenization.base import CONFIG_FILE, Tokenizer
from s2s.tokenization.batch_encoding import BatchEncoding
from s2s.tokenization.loading import load_tokenizer
from s2s.tokenization.sentencepiece_backend import SentencePieceTokenizer
from s2s.tokenization.tokenizers_backend import HFTokenizer
from s2s.tokenization.training import train_joint_tokenizer, train_tokenizer

__all__ = [
    "CONFIG_FILE",
    "BatchEncoding",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "train_joint_tokenizer",
    "train_tokenizer",
]
