"""Data collators: padding values and widths (the pad_to_multiple_of boundary), labels, decoder_input_ids, and
the same behaviour with our tokenizer and with a Hugging Face tokenizer (compared against Hugging Face's collator).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s.data_collator import (
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    default_data_collator,
    shift_tokens_right,
)
from s2s.tokenization import train_joint_tokenizer

PAD, START = 0, 2
SENTENCES = [
    ("Ein kleiner Hund rennt im Park.", "A small dog runs in the park."),
    ("Zwei Männer sitzen auf einer Bank.", "Two men sit on a bench."),
    ("Eine Frau liest.", "A woman reads."),
    (
        "Kinder spielen am Strand mit einem roten Ball und lachen laut.",
        "Children play with a red ball on the beach.",
    ),
] * 40


class PadOnly:
    """The least a tokenizer must offer the collators."""

    pad_token_id = PAD


def feature(n_in: int, n_out: int, offset: int = 10) -> dict[str, list[int]]:
    return {
        "input_ids": list(range(offset, offset + n_in)),
        "labels": list(range(offset + 50, offset + 50 + n_out)),
    }


@pytest.fixture(scope="module")
def our_tokenizer():
    return train_joint_tokenizer(SENTENCES, vocab_size=80, hard_vocab_limit=False, num_threads=1)


@pytest.fixture(scope="module")
def hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rust = Tokenizer(models.BPE(unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    rust.train_from_iterator([s for pair in SENTENCES for s in pair], trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=rust, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(
    ("longest", "multiple", "width"), [(8, 8, 8), (9, 8, 16), (7, 8, 8), (16, 8, 16), (5, None, 5)]
)
def test_pad_to_multiple_of_boundary(longest, multiple, width):
    collator = DataCollatorForSeq2Seq(PadOnly(), pad_to_multiple_of=multiple)
    batch = collator([feature(longest, 3), feature(2, longest)])
    assert batch["input_ids"].shape == (2, width)
    assert batch["labels"].shape == (2, width)


def test_inputs_pad_with_pad_id_and_labels_with_minus_100():
    batch = DataCollatorForSeq2Seq(PadOnly())([feature(4, 2), feature(2, 5)])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13], [10, 11, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[60, 61, -100, -100, -100], [60, 61, 62, 63, 64]]
    assert all(v.dtype == torch.int64 for v in batch.values())
    assert "decoder_input_ids" not in batch  # no model and no start token: nothing to build them from
    custom = DataCollatorForSeq2Seq(PadOnly(), label_pad_token_id=-1)([feature(1, 1), feature(1, 2)])
    assert custom["labels"].tolist() == [[60, -1], [60, 61]]


def test_decoder_input_ids_are_labels_shifted_right_with_pads():
    collator = DataCollatorForSeq2Seq(PadOnly(), decoder_start_token_id=START, pad_to_multiple_of=4)
    batch = collator([feature(3, 2), feature(2, 5)])
    labels, decoder = batch["labels"], batch["decoder_input_ids"]
    assert decoder.shape == labels.shape == (2, 8)
    assert decoder[:, 0].eq(START).all()
    expected = labels[:, :-1].masked_fill(labels[:, :-1] == -100, PAD)
    assert torch.equal(decoder[:, 1:], expected)
    assert decoder.tolist()[0] == [START, 60, 61, PAD, PAD, PAD, PAD, PAD]
    assert not decoder.eq(-100).any()


def test_model_prepare_decoder_input_ids_from_labels_is_used():
    class Model:
        def __init__(self):
            self.seen = None

        def prepare_decoder_input_ids_from_labels(self, labels):
            self.seen = labels
            return torch.full_like(labels, 7)

    model = Model()
    batch = DataCollatorForSeq2Seq(PadOnly(), model=model)([feature(3, 2), feature(2, 4)])
    assert isinstance(model.seen, torch.Tensor) and torch.equal(model.seen, batch["labels"])
    assert batch["decoder_input_ids"].eq(7).all()
    as_np = DataCollatorForSeq2Seq(PadOnly(), model=model, return_tensors="np")(
        [feature(3, 2), feature(2, 4)]
    )
    assert isinstance(as_np["decoder_input_ids"], np.ndarray) and as_np["decoder_input_ids"].shape == (2, 4)
    # An explicit start token wins over the model.
    explicit = DataCollatorForSeq2Seq(PadOnly(), model=model, decoder_start_token_id=START)([feature(3, 2)])
    assert explicit["decoder_input_ids"].tolist() == [[START, 60]]


def test_existing_decoder_input_ids_are_padded_not_replaced():
    features = [
        dict(feature(2, 2), decoder_input_ids=[5, 6]),
        dict(feature(2, 3), decoder_input_ids=[5, 6, 7]),
    ]
    batch = DataCollatorForSeq2Seq(PadOnly(), decoder_start_token_id=START)(features)
    assert batch["decoder_input_ids"].tolist() == [[5, 6, PAD], [5, 6, 7]]


def test_numpy_return_and_lists_return():
    features = [feature(3, 2), feature(1, 4)]
    batch = DataCollatorForSeq2Seq(PadOnly(), return_tensors="np", decoder_start_token_id=START)(features)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.int64 for v in batch.values())
    assert batch["labels"].tolist() == [[60, 61, -100, -100], [60, 61, 62, 63]]
    lists = DataCollatorForSeq2Seq(PadOnly(), return_tensors=None)(features)
    assert lists["input_ids"] == [[10, 11, 12], [10, PAD, PAD]]


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=6),
    multiple=st.sampled_from([None, 1, 4, 8]),
)
def test_variable_lengths_keep_every_token(lengths, multiple):
    features = [feature(a, b, offset=10 + i) for i, (a, b) in enumerate(lengths)]
    batch = DataCollatorForSeq2Seq(PadOnly(), pad_to_multiple_of=multiple, decoder_start_token_id=START)(
        features
    )
    longest_in, longest_out = max(a for a, _ in lengths), max(b for _, b in lengths)
    m = multiple or 1
    assert batch["input_ids"].shape[1] == -(-longest_in // m) * m
    assert batch["labels"].shape[1] == -(-longest_out // m) * m
    for row, f in enumerate(features):
        n, k = len(f["input_ids"]), len(f["labels"])
        assert batch["input_ids"][row, :n].tolist() == f["input_ids"]
        assert batch["input_ids"][row, n:].eq(PAD).all() and batch["attention_mask"][row].sum() == n
        assert batch["labels"][row, :k].tolist() == f["labels"] and batch["labels"][row, k:].eq(-100).all()
    assert shift_tokens_right(batch["labels"].tolist(), decoder_start_token_id=START, pad_token_id=PAD) == (
        batch["decoder_input_ids"].tolist()
    )


def test_max_length_padding_and_its_limit():
    collator = DataCollatorForSeq2Seq(PadOnly(), padding="max_length", max_length=6, pad_to_multiple_of=4)
    batch = collator([feature(3, 2), feature(1, 5)])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 8)
    with pytest.raises(ValueError, match="length 9 is longer than max_length=6"):
        collator([feature(9, 2)])


def test_no_padding_needs_equal_lengths_for_tensors():
    collator = DataCollatorForSeq2Seq(PadOnly(), padding=False)
    assert collator([feature(3, 2), feature(3, 2)])["input_ids"].shape == (2, 3)
    with pytest.raises(ValueError, match="pass padding=True"):
        collator([feature(3, 2), feature(2, 2)])
    ragged = DataCollatorForSeq2Seq(PadOnly(), padding=False, return_tensors=None)(
        [feature(3, 2), feature(2, 4)]
    )
    assert [len(r) for r in ragged["labels"]] == [2, 4]


def test_other_keys_scalars_strings_and_ragged():
    features = [dict(feature(2, 2), id=4, source="a b"), dict(feature(3, 1), id=9, source="c")]
    batch = DataCollatorForSeq2Seq(PadOnly())(features)
    assert batch["id"].tolist() == [4, 9] and batch["source"] == ["a b", "c"]
    with pytest.raises(ValueError, match="'extra' holds sequences of different lengths"):
        DataCollatorForSeq2Seq(PadOnly())([dict(feature(2, 2), extra=[1]), dict(feature(2, 2), extra=[1, 2])])
    with pytest.raises(ValueError, match=r"features\[1\] has keys"):
        DataCollatorForSeq2Seq(PadOnly())([feature(2, 2), {"input_ids": [1]}])


def test_tensor_and_array_features():
    features = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": np.array([8, 9])},
        {"input_ids": torch.tensor([5]), "labels": np.array([8, 9, 10])},
    ]
    batch = DataCollatorForSeq2Seq(PadOnly(), decoder_start_token_id=START)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, PAD, PAD]]
    assert batch["labels"].tolist() == [[8, 9, -100], [8, 9, 10]]


def test_missing_pad_token_is_a_clear_error():
    class NoPad:
        pad_token_id = None

    with pytest.raises(ValueError, match="no pad_token_id"):
        DataCollatorForSeq2Seq(NoPad())([feature(2, 2), feature(3, 2)])


def test_with_our_tokenizer_labels_decode_back(our_tokenizer):
    tok = our_tokenizer
    pairs = SENTENCES[:4]
    features = [dict(tok(src, text_target=tgt)) for src, tgt in pairs]
    batch = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, decoder_start_token_id=tok.bos_token_id)(
        features
    )
    assert batch["input_ids"].shape[1] % 8 == 0
    assert tok.batch_decode(batch["input_ids"]) == [src for src, _ in pairs]
    assert tok.batch_decode(batch["labels"]) == [tgt for _, tgt in pairs]
    assert tok.batch_decode(batch["decoder_input_ids"]) == [tgt for _, tgt in pairs]  # start + target, no eos
    direct = tok([s for s, _ in pairs], text_target=[t for _, t in pairs], padding=True, pad_to_multiple_of=8)
    assert batch["input_ids"].tolist() == direct["input_ids"] and batch["labels"].tolist() == direct["labels"]


def test_matches_hugging_face_collator_with_a_hugging_face_tokenizer(hf_tokenizer):
    from transformers import DataCollatorForSeq2Seq as HFCollator

    rng = random.Random(0)
    pairs = rng.sample(SENTENCES[:4], 4)
    features = [dict(hf_tokenizer(src, text_target=tgt)) for src, tgt in pairs]
    for multiple in (None, 8):
        ours = DataCollatorForSeq2Seq(hf_tokenizer, pad_to_multiple_of=multiple)([dict(f) for f in features])
        theirs = HFCollator(hf_tokenizer, pad_to_multiple_of=multiple)([dict(f) for f in features])
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(ours[key], theirs[key]), key
    assert hf_tokenizer.batch_decode(ours["input_ids"], skip_special_tokens=True) == [s for s, _ in pairs]


def test_hugging_face_model_builds_decoder_input_ids(hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=len(hf_tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
    )  # fmt: skip
    model = transformers.BartForConditionalGeneration(config)
    features = [
        dict(hf_tokenizer(src, text_target=tgt, return_token_type_ids=False)) for src, tgt in SENTENCES[:3]
    ]
    batch = DataCollatorForSeq2Seq(hf_tokenizer, model=model, pad_to_multiple_of=8)(features)
    labels = batch["labels"]
    expected = shift_tokens_right(labels.tolist(), decoder_start_token_id=3, pad_token_id=0)
    assert batch["decoder_input_ids"].tolist() == expected
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_data_collator_with_padding_renames_label():
    features = [{"input_ids": [5, 6, 7], "label": 1}, {"input_ids": [5], "label": 0}]
    batch = DataCollatorWithPadding(PadOnly(), pad_to_multiple_of=4)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, PAD], [5, PAD, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.int64
    seq = DataCollatorWithPadding(PadOnly(), return_tensors="np")(
        [{"input_ids": [5, 6], "label_ids": [1, 2]}, {"input_ids": [5], "label_ids": [3]}]
    )
    assert seq["labels"].tolist() == [[1, 2], [3, -100]]


def test_default_data_collator_stacks_equal_lengths():
    features = [
        {"input_ids": [1, 2], "label": 0.5, "text": "a", "skip": None},
        {"input_ids": [3, 4], "label": 1.5, "text": "b", "skip": None},
    ]
    batch = default_data_collator(features)
    assert batch["input_ids"].tolist() == [[1, 2], [3, 4]] and batch["input_ids"].dtype == torch.int64
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 1.5]
    assert batch["text"] == ["a", "b"] and "skip" not in batch
    ids = default_data_collator([{"x": torch.ones(2), "label_ids": [1, 2]}] * 3, return_tensors="np")
    assert ids["x"].shape == (3, 2) and ids["labels"].tolist() == [[1, 2]] * 3
    with pytest.raises(ValueError, match="'input_ids' holds sequences of different lengths"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [1]}])
