"""Tokenizers: special ids, round trips, truncation/padding rules, labels, save/load and errors, on both backends.

Tokenizers are trained once per module on a few hundred synthetic English/German sentences (well under a second).
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from s2s.tokenization import (
    BatchEncoding,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    train_joint_tokenizer,
    train_tokenizer,
)

EN_ADJ = ["young", "old", "small", "happy", "tall", "little", "red", "blue"]
EN_NOUN = ["man", "woman", "dog", "girl", "boy", "child", "worker", "player"]
EN_VERB = ["walks", "runs", "sits", "jumps", "waits", "plays"]
EN_PLACE = ["the street", "the park", "a beach", "the house", "a bridge"]
DE_ADJ = ["junger", "alter", "kleiner", "glücklicher", "großer", "müder", "roter", "blauer"]
DE_NOUN = ["Mann", "Hund", "Junge", "Spieler", "Arbeiter", "Läufer", "Bär", "Fußballer"]
DE_VERB = ["geht", "rennt", "sitzt", "springt", "wartet", "spielt"]
DE_PLACE = ["der Straße", "dem Park", "einem Strand", "dem Haus", "einer Brücke"]


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b, c, d = (rng.randrange(len(x)) for x in (EN_ADJ, EN_NOUN, EN_VERB, EN_PLACE))
        en = f"A {EN_ADJ[a]} {EN_NOUN[b]} {EN_VERB[c]} near {EN_PLACE[d]}."
        de = f"Ein {DE_ADJ[a]} {DE_NOUN[b]} {DE_VERB[c]} bei {DE_PLACE[d]}."
        pairs.append((de, en))
    return pairs


PAIRS = make_pairs(300)
HELD_OUT = [p for pair in make_pairs(20, seed=99) for p in pair]
SPECS = {
    "sp_unigram": dict(backend="sentencepiece", model_type="unigram", vocab_size=90),
    "sp_bpe": dict(backend="sentencepiece", model_type="bpe", vocab_size=90),
    "hf_bpe": dict(backend="bpe", vocab_size=400),  # byte-level: 256 bytes + 4 specials + merges
    "hf_metaspace": dict(backend="bpe", pre_tokenizer="metaspace", vocab_size=150),
}


@pytest.fixture(scope="module", params=list(SPECS))
def tok(request) -> Tokenizer:
    return train_joint_tokenizer(PAIRS, num_threads=1, model_max_length=32, **SPECS[request.param])


@pytest.fixture(scope="module")
def sp_tok() -> Tokenizer:
    return train_joint_tokenizer(PAIRS, vocab_size=90, num_threads=1)


def plain_ids(tok: Tokenizer, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_special_ids_follow_the_contract(tok):
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert len(tok) == tok.vocab_size == len(tok.get_vocab())
    assert tok.model_input_names == ["input_ids", "attention_mask"]


def test_sources_end_with_eos_and_have_no_bos(tok):
    for text in HELD_OUT[:5]:
        ids = tok.encode(text)
        assert ids[-1] == tok.eos_token_id
        assert tok.eos_token_id not in ids[:-1] and tok.bos_token_id not in ids
        assert ids[:-1] == plain_ids(tok, text)


def test_decode_gives_back_the_text(tok):
    texts = [p for pair in PAIRS[:20] for p in pair] + HELD_OUT
    assert tok.batch_decode(tok(texts)["input_ids"]) == texts
    assert tok.decode(tok.encode(texts[0])) == texts[0]


def test_byte_level_bpe_round_trips_unseen_characters():
    tok = train_tokenizer([p[1] for p in PAIRS], backend="bpe", vocab_size=300)
    text = "Zoë läuft nach 東京 — 42 km!"
    assert tok.unk_token_id not in tok.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_joint_vocabulary_covers_both_languages(sp_tok):
    vocab = sp_tok.get_vocab()
    assert "▁Fußballer" in vocab or "▁Fuß" in vocab or "ß" in vocab
    for text in ("Ein müder Bär rennt bei dem Park.", "A tall player jumps near a bridge."):
        assert sp_tok.unk_token_id not in sp_tok.encode(text)


def test_truncation_keeps_the_final_eos(tok):
    text = HELD_OUT[0]
    full = tok.encode(text)
    assert len(full) > 6
    short = tok(text, max_length=6, truncation=True)["input_ids"]
    assert short == full[:5] + [tok.eos_token_id]
    batch = tok(
        [text, "A dog."], text_target=[text, "Ein Hund."], max_length=6, max_target_length=4, truncation=True
    )
    assert [len(ids) for ids in batch["input_ids"]] == [6, min(6, len(tok.encode("A dog.")))]
    assert batch["labels"][0] == full_target(tok, text)[:3] + [tok.eos_token_id]
    assert all(ids[-1] == tok.eos_token_id for ids in batch["input_ids"] + batch["labels"])


def full_target(tok: Tokenizer, text: str) -> list[int]:
    return tok(text_target=text)["input_ids"]


def test_truncation_without_a_length_uses_model_max_length(sp_tok):
    long_text = " ".join(HELD_OUT)
    with pytest.raises(ValueError, match="truncation=True needs max_length"):
        sp_tok(long_text, truncation=True)
    sp_tok.model_max_length = 10
    try:
        assert len(sp_tok(long_text, truncation=True)["input_ids"]) == 10
    finally:
        sp_tok.model_max_length = None
    assert len(sp_tok(long_text)["input_ids"]) > 10  # no truncation unless asked


def test_padding_longest_and_pad_to_multiple_of_boundary(tok):
    texts = HELD_OUT[:4]
    # Truncating to 8 makes the longest row exactly 8: a multiple of 8 must stay 8, not become 16.
    batch = tok(texts, max_length=8, truncation=True, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert batch["input_ids"].shape == (4, 8)
    batch = tok(texts, max_length=9, truncation=True, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert batch["input_ids"].shape == (4, 16)
    lengths = [len(tok.encode(t)) for t in ["A dog.", texts[0]]]
    batch = tok(["A dog.", texts[0]], padding="longest")
    assert [len(r) for r in batch["input_ids"]] == [max(lengths)] * 2
    assert batch["attention_mask"][0] == [1] * lengths[0] + [0] * (max(lengths) - lengths[0])
    assert batch["input_ids"][0][lengths[0] :] == [tok.pad_token_id] * (max(lengths) - lengths[0])


def test_padding_max_length(tok):
    batch = tok(["A dog.", "Ein Hund."], padding="max_length", max_length=12, return_tensors="np")
    assert batch["input_ids"].shape == (2, 12)
    assert (batch["attention_mask"].sum(1) == [len(tok.encode("A dog.")), len(tok.encode("Ein Hund."))]).all()
    with pytest.raises(ValueError, match="longer than max_length=3"):
        tok([HELD_OUT[0]], padding="max_length", max_length=3)


def test_text_target_gives_labels_padded_with_minus_100(tok):
    src, tgt = ["Ein Hund.", HELD_OUT[0]], [HELD_OUT[1], "A dog."]
    batch = tok(src, text_target=tgt, padding=True)
    assert isinstance(batch, BatchEncoding) and batch.labels is batch["labels"]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    expected = [tok.encode(t) for t in tgt]
    width = max(map(len, expected))
    assert batch["labels"] == [e + [-100] * (width - len(e)) for e in expected]
    single = tok("Ein Hund.", text_target="A dog.")
    assert single["labels"] == tok.encode("A dog.") and single["input_ids"] == tok.encode("Ein Hund.")
    assert tok(text_target="A dog.")["input_ids"] == tok.encode("A dog.")
    with pytest.raises(ValueError, match="text has 2 item"):
        tok(src, text_target=tgt[:1])


def test_return_tensors_types(tok):
    batch = tok(["A dog.", HELD_OUT[0]], text_target=["Ein Hund.", "x"], padding=True, return_tensors="pt")
    assert all(v.dtype == torch.int64 for v in batch.values())
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    single = tok("A dog.", return_tensors="np")
    assert (
        single["input_ids"].shape == (1, len(tok.encode("A dog."))) and single["input_ids"].dtype == np.int64
    )
    with pytest.raises(ValueError, match="pass padding=True"):
        tok(["A dog.", HELD_OUT[0]], return_tensors="pt")


def test_batch_decode_skips_minus_100_and_special_tokens(tok):
    texts = ["A dog.", HELD_OUT[0]]
    labels = tok(texts, text_target=texts, padding=True, pad_to_multiple_of=8)["labels"]
    assert -100 in labels[0]
    rows = [[tok.bos_token_id] + tok.encode(t) for t in texts]  # as generate() returns: start, text, eos
    width = max(map(len, rows))
    generated = [row + [tok.pad_token_id] * (width - len(row)) for row in rows]
    for form in (
        labels,
        np.array(labels),
        torch.tensor(labels),
        torch.tensor(generated),
        np.array(generated),
    ):
        assert tok.batch_decode(form) == texts
    kept = tok.batch_decode(torch.tensor(generated), skip_special_tokens=False)
    assert kept[0] == "<s>" + texts[0] + "</s>" + "<pad>" * (width - len(rows[0]))
    assert tok.decode(torch.tensor(generated[1])) == texts[1]
    first = tok.encode("A dog.")[0]
    assert tok.decode(np.int64(first)) == tok.decode([first]) == tok.decode(first)
    with pytest.raises(ValueError, match="use batch_decode"):
        tok.decode(torch.tensor(generated))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.batch_decode([[5, tok.vocab_size + 3]])


def test_convert_tokens_and_ids(tok):
    tokens = tok.tokenize("A dog.")
    ids = tok.convert_tokens_to_ids(tokens)
    assert ids == plain_ids(tok, "A dog.")
    assert tok.convert_ids_to_tokens(ids) == tokens
    assert tok.convert_tokens_to_ids("<pad>") == 0
    assert tok.convert_tokens_to_ids("certainly-not-a-token") == tok.unk_token_id


def test_pad_features(tok):
    features = [tok("A dog.", text_target="Ein Hund."), tok(HELD_OUT[0], text_target=HELD_OUT[1])]
    for feature in features:
        del feature["attention_mask"]
    batch = tok.pad(features, pad_to_multiple_of=4, return_tensors="pt")
    n0, n1 = len(features[0]["input_ids"]), len(features[1]["input_ids"])
    assert batch["input_ids"].shape[1] % 4 == 0 and batch["input_ids"].shape[1] >= max(n0, n1)
    assert batch["attention_mask"][0].sum() == n0 and batch["attention_mask"][1].sum() == n1
    assert (batch["input_ids"][0, n0:] == tok.pad_token_id).all()
    assert batch["labels"][0, len(features[0]["labels"]) :].eq(-100).all()
    assert tok.batch_decode(batch["labels"]) == ["Ein Hund.", HELD_OUT[1]]


def test_save_and_load_give_identical_ids(tok, tmp_path):
    texts = HELD_OUT + ["Zoë 東京"]
    written = tok.save_pretrained(tmp_path / "tok")
    assert all(Path(p).is_file() for p in written)
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["backend"] == tok.backend and config["model_max_length"] == 32
    assert config["special_token_ids"] == {"pad_token": 0, "unk_token": 1, "bos_token": 2, "eos_token": 3}
    for loaded in (load_tokenizer(tmp_path / "tok"), Tokenizer.from_pretrained(tmp_path / "tok")):
        assert type(loaded) is type(tok) and loaded.model_max_length == 32
        assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
        assert loaded.batch_decode(loaded(texts)["input_ids"]) == tok.batch_decode(tok(texts)["input_ids"])
    bare = load_tokenizer(tmp_path / "tok" / config["model_file"])  # a bare model file also loads
    assert bare(texts)["input_ids"] == tok(texts)["input_ids"]
    assert load_tokenizer(tmp_path / "tok", model_max_length=7).model_max_length == 7


def test_from_pretrained_on_the_wrong_backend_class(sp_tok, tmp_path):
    sp_tok.save_pretrained(tmp_path)
    assert isinstance(SentencePieceTokenizer.from_pretrained(tmp_path), SentencePieceTokenizer)
    with pytest.raises(TypeError, match="holds a SentencePieceTokenizer, not a HFTokenizer"):
        HFTokenizer.from_pretrained(tmp_path)


def test_pickles_for_dataloader_workers(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone(HELD_OUT)["input_ids"] == tok(HELD_OUT)["input_ids"]
    batch = pickle.loads(pickle.dumps(tok(HELD_OUT[:2], padding=True, return_tensors="pt")))
    assert isinstance(batch, BatchEncoding) and batch.input_ids.shape[0] == 2


def test_missing_directory_names_the_path_and_expected_files(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"nope does not exist.*tokenizer_config\.json"):
        load_tokenizer(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no tokenizer in .*empty: expected tokenizer_config\.json"):
        load_tokenizer(tmp_path / "empty")


def test_corrupt_files_give_clear_errors(sp_tok, tmp_path):
    sp_tok.save_pretrained(tmp_path)
    model = tmp_path / "sentencepiece.model"
    model.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ValueError, match=r"sentencepiece\.model is not a valid sentencepiece model"):
        load_tokenizer(tmp_path)
    model.unlink()
    with pytest.raises(FileNotFoundError, match=r"names the model file 'sentencepiece.model'"):
        load_tokenizer(tmp_path)
    config = tmp_path / "tokenizer_config.json"
    config.write_text('{\n  "backend": "sentencepiece",\n  oops\n}')
    with pytest.raises(ValueError, match=r"tokenizer_config\.json is not valid JSON \(line 3"):
        load_tokenizer(tmp_path)
    broken_json = tmp_path / "other" / "tokenizer.json"
    broken_json.parent.mkdir()
    broken_json.write_text("{}")
    with pytest.raises(ValueError, match=r"tokenizer\.json is not a valid tokenizers tokenizer\.json"):
        load_tokenizer(broken_json.parent)


def test_config_that_does_not_match_its_model_is_refused(sp_tok, tmp_path):
    sp_tok.save_pretrained(tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["special_token_ids"]["eos_token"] = 7
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="eos_token saved as 7 but the model has 3"):
        load_tokenizer(tmp_path)


def test_any_tokenizer_json_loads_with_its_own_special_tokens(tmp_path):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[SEP]": 2, "a": 3, "dog": 4, ".": 5}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.decoder = decoders.WordPiece()
    rust.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"pad_token '<pad>' is not in the vocabulary"):
        load_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path, pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]")
    assert tok("a dog .", padding="max_length", max_length=5)["input_ids"] == [3, 4, 5, 2, 0]
    assert tok("a cat")["input_ids"] == [3, 1, 2] and tok.bos_token_id is None


def test_train_from_files_and_texts(tmp_path):
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("\n".join(p[0] for p in PAIRS) + "\n\n")
    tgt.write_text("\n".join(p[1] for p in PAIRS))
    from_files = train_tokenizer([src, tgt], vocab_size=90, num_threads=1)
    from_texts = train_tokenizer(
        [t for pair in zip(*zip(*PAIRS)) for t in pair], vocab_size=90, num_threads=1
    )
    assert from_files.vocab_size == from_texts.vocab_size == 90
    assert from_files.batch_decode(from_files(HELD_OUT)["input_ids"]) == HELD_OUT
    single_file = train_tokenizer(tgt, backend="bpe", vocab_size=300)
    assert single_file.decode(single_file.encode(PAIRS[0][1])) == PAIRS[0][1]
    with pytest.warns(UserWarning, match="pass pathlib.Path"):
        train_tokenizer(
            [str(tgt)] + [p[1] for p in PAIRS], vocab_size=60, hard_vocab_limit=False, num_threads=1
        )


def test_training_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        train_tokenizer([tmp_path / "missing.txt"], vocab_size=100)
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        train_tokenizer([tmp_path / "missing.txt"], vocab_size=100, backend="bpe")
    with pytest.raises(ValueError, match="model_type='unigram' needs backend='sentencepiece'"):
        train_tokenizer(["a b"], vocab_size=300, backend="bpe", model_type="unigram")
    with pytest.raises(ValueError, match="Vocabulary size.*hard_vocab_limit=False"):
        train_tokenizer(["a small corpus"] * 10, vocab_size=5000, num_threads=1)
    with pytest.raises(TypeError, match=r"text\[1\] is NoneType"):
        train_tokenizer(["a small corpus"] * 10, vocab_size=30, hard_vocab_limit=False)(["ok", None])
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([], vocab_size=100)


def test_input_sentence_size_caps_the_bpe_corpus():
    texts = ["aaaa bbbb"] * 50 + ["zzzz yyyy"] * 50
    tok = train_tokenizer(
        texts, backend="bpe", pre_tokenizer="metaspace", vocab_size=40, input_sentence_size=50
    )
    assert "▁aaaa" in tok.get_vocab() and "▁zzzz" not in tok.get_vocab()


@pytest.mark.slow
def test_multi30k_joint_tokenizer(shared_data, tmp_path):
    rows = [json.loads(line)["translation"] for line in (shared_data / "multi30k" / "train.jsonl").open()]
    pairs = [(r["de"], r["en"]) for r in rows]
    tok = train_joint_tokenizer(pairs, vocab_size=8000, input_sentence_size=20000)
    batch = tok([p[0] for p in pairs], text_target=[p[1] for p in pairs], max_length=128, truncation=True)
    assert len(batch["input_ids"]) == len(batch["labels"]) == len(pairs) > 28000
    assert all(ids[-1] == tok.eos_token_id for ids in batch["input_ids"] + batch["labels"])
    decoded = tok.batch_decode(batch["labels"])
    same = sum(d == " ".join(p[1].split()) for d, p in zip(decoded, pairs))
    assert same / len(pairs) > 0.99  # sentencepiece only normalises whitespace and NFKC forms
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)([p[0] for p in pairs[:100]])["input_ids"] == batch["input_ids"][:100]
