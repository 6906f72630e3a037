"""to_transformers: our model saved as a Hugging Face folder loads back (here and in transformers) with the same
logits, CTranslate2 converts it, and a config no family reproduces is refused by name. Also the folder reader's
errors (missing, sharded, pickled weights; foreign tokenizer; unsupported family or option)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from s2s.models import (
    TransformerConfig,
    TransformerForConditionalGeneration,
    UnsupportedModelError,
    from_transformers,
    to_transformers,
)
from tests.s2s.models.family_options import BART_OPTIONS, T5_OPTIONS
from tests.s2s.models.hf_toys import FAMILIES, VOCAB, hf_model, padded_batch

# The options of each family, set on a natively built model (no transformers needed to export it). The
# toolkit's default model becomes an M2M100 with positions numbered from the padding.
NATIVE = {
    "m2m_100": dict(positions_from_padding=True),
    "bart": dict(BART_OPTIONS, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
    "t5_v1_1": dict(
        T5_OPTIONS,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        tie_word_embeddings=False,
        dropout_after_final_norm=True,
        freeze_padding_embedding=False,
        layer_norm_eps=1e-6,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    ),
}


def native_model(family: str, seed: int = 0) -> TransformerForConditionalGeneration:
    options = dict(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=2,
        ffn_dim=48,
        dropout=0.0,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = TransformerForConditionalGeneration(TransformerConfig(**{**options, **NATIVE[family]})).eval()
    with torch.no_grad():  # norms and the logits bias away from their start, so a misplaced one shows
        for name, tensor in model.state_dict().items():
            if "norm" in name or "final_logits_bias" in name:
                tensor.add_(torch.randn_like(tensor) * 0.3)
    return model


def logits(model, pad: int, start: int) -> torch.Tensor:
    ids, mask = padded_batch(pad)
    decoder_ids = torch.tensor([[start, 7, 9, 11]] * 3)
    with torch.no_grad():
        return model(ids, mask, decoder_input_ids=decoder_ids).logits


@pytest.mark.parametrize("family", sorted(NATIVE))
def test_native_model_round_trips_through_a_hf_folder(tmp_path, family):
    model = native_model(family)
    model.generation_config.update(num_beams=3, max_new_tokens=12, no_repeat_ngram_size=2)
    to_transformers(model, tmp_path)
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    back = from_transformers(tmp_path)
    config = model.config
    assert back.config == config
    assert torch.equal(
        logits(back, config.pad_token_id, config.decoder_start_token_id),
        logits(model, config.pad_token_id, config.decoder_start_token_id),
    )
    assert back.generation_config.to_dict() == model.generation_config.to_dict()


@pytest.mark.parametrize("family", sorted(NATIVE))
def test_native_model_exports_to_a_folder_transformers_loads(tmp_path, family):
    transformers = pytest.importorskip("transformers")
    model = native_model(family)
    to_transformers(model, tmp_path)
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    pad, start = model.config.pad_token_id, model.config.decoder_start_token_id
    ids, mask = padded_batch(pad)
    decoder_ids = torch.tensor([[start, 7, 9, 11]] * 3)
    with torch.no_grad():
        theirs = reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(theirs, logits(model, pad, start), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_imported_model_exports_to_a_folder_transformers_loads(tmp_path, family):
    transformers = pytest.importorskip("transformers")
    hf = hf_model(family)
    ours = from_transformers(hf)
    to_transformers(ours, tmp_path)
    again = from_transformers(tmp_path)
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(hf)
    pad, start = hf.config.pad_token_id, hf.config.decoder_start_token_id
    expected = logits(ours, pad, start)
    assert torch.equal(logits(again, pad, start), expected)
    ids, mask = padded_batch(pad)
    decoder_ids = torch.tensor([[start, 7, 9, 11]] * 3)
    with torch.no_grad():
        theirs = reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=1e-5)


def word_level_tokenizer(special: dict[str, int]):
    """A tokenizer over the tiny vocabulary: specials at their ids, "t<i>" for every other id."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {**{f"t{i}": i for i in range(VOCAB) if i not in special.values()}, **special}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    roles = {"<s>": "bos_token", "</s>": "eos_token", "<pad>": "pad_token", "<unk>": "unk_token"}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, **{roles[token]: token for token in special}
    )


CT2_SPECIALS = {
    "bart": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    "mbart": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    "m2m_100": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    "marian": {"</s>": 0, "<unk>": 1, "<pad>": VOCAB - 1},
    "t5": {"<pad>": 0, "</s>": 1, "<unk>": 2},
    "t5_v1_1": {"<pad>": 0, "</s>": 1, "<unk>": 2},
}


@pytest.mark.parametrize(
    "family, native",
    [
        ("bart", True),
        ("t5_v1_1", True),
        ("mbart", False),
        ("marian", False),
        ("m2m_100", False),
        ("t5", False),
    ],
)
def test_ctranslate2_converts_the_export_and_decodes_as_we_do(tmp_path, family, native):
    ctranslate2 = pytest.importorskip("ctranslate2")
    tokenizer = word_level_tokenizer(CT2_SPECIALS[family])
    model = native_model(family) if native else from_transformers(hf_model(family))
    to_transformers(model, tmp_path / "hf", tokenizer=tokenizer)
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "ct2"))
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    eos = model.config.eos_token_id
    ids = torch.randint(4, VOCAB - 1, (3, 6), generator=torch.Generator().manual_seed(5))
    ids[:, -1] = eos
    results = translator.translate_batch(
        [tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()], beam_size=1, max_decoding_length=10
    )
    theirs = [result.hypotheses[0] for result in results]
    # CTranslate2 never ends a translation at its first token and forces no token: the same settings here
    settings = dict(max_new_tokens=10, min_new_tokens=1, forced_bos_token_id=None, forced_eos_token_id=None)
    with torch.no_grad():
        mine = model.generate(ids, None, **settings)
    generated = [row[1:] for row in mine.tolist()]  # after the start token (eos itself for BART-likes)
    expected = [row[: row.index(eos)] if eos in row else row for row in generated]
    assert theirs == [tokenizer.convert_ids_to_tokens(row) for row in expected]


def test_a_config_no_family_reproduces_is_refused_naming_the_options(tmp_path):
    model = TransformerForConditionalGeneration(TransformerConfig(vocab_size=VOCAB, d_model=32, num_heads=2))
    with pytest.raises(
        UnsupportedModelError, match=r"m2m_100: positions_from_padding=False \(m2m_100 needs True\)"
    ):
        to_transformers(model, tmp_path)
    swiglu = native_model("bart")
    swiglu.config.activation = "swiglu"
    with pytest.raises(UnsupportedModelError, match=r"bart: activation='swiglu'"):
        to_transformers(swiglu, tmp_path)


def test_generation_settings_without_hf_equivalent_are_refused(tmp_path):
    model = native_model("bart")
    model.generation_config.update(max_length_a=1.2, max_length_b=5)
    with pytest.raises(UnsupportedModelError, match="max_length_a"):
        to_transformers(model, tmp_path)


# ---------------------------------------------------------------------- the folder reader's errors
@pytest.fixture()
def bart_folder(tmp_path):
    model = native_model("bart")
    to_transformers(model, tmp_path)
    return tmp_path, model


def test_unsupported_family_names_itself_and_the_supported_ones(bart_folder):
    folder, _ = bart_folder
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "pegasus"}))
    with pytest.raises(
        UnsupportedModelError, match=r"config.json: model_type 'pegasus'.*bart, mbart, marian, m2m_100, t5"
    ):
        from_transformers(folder)


def test_an_option_without_equivalent_names_the_key(bart_folder):
    folder, _ = bart_folder
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "decoder_attention_heads": 4}))
    with pytest.raises(UnsupportedModelError, match=r"config.json: decoder_attention_heads=4"):
        from_transformers(folder)
    (folder / "config.json").write_text(json.dumps({**config, "activation_function": "quick_gelu"}))
    with pytest.raises(UnsupportedModelError, match=r"activation_function='quick_gelu'"):
        from_transformers(folder)


def test_a_folder_without_weights_is_refused_naming_the_files(bart_folder):
    folder, _ = bart_folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no weights: expected model.safetensors"):
        from_transformers(folder)


def test_sharded_safetensors_are_read_through_their_index(bart_folder):
    folder, model = bart_folder
    state = load_file(folder / "model.safetensors")
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in halves.items():
        save_file({name: state[name] for name in shard_names}, folder / shard)
    index = {"weight_map": {name: shard for shard, shard_names in halves.items() for name in shard_names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model.safetensors").unlink()
    back = from_transformers(folder)
    assert torch.equal(logits(back, 1, 2), logits(model, 1, 2))
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"index.json lists the shard model-00002-of-00002.safetensors"
    ):
        from_transformers(folder)


def test_a_pickle_is_read_only_when_allowed(bart_folder):
    folder, model = bart_folder
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pytorch_model.bin is a pickle.*allow_pickle=True"):
        from_transformers(folder)
    back = from_transformers(folder, allow_pickle=True)
    assert torch.equal(logits(back, 1, 2), logits(model, 1, 2))


def test_a_tokenizer_larger_than_the_embeddings_is_refused(bart_folder):
    folder, _ = bart_folder
    vocab = {f"w{i}": i for i in range(VOCAB + 5)}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": vocab}}))
    with pytest.raises(ValueError, match=rf"tokenizer.json: the tokenizer produces ids up to {VOCAB + 4}"):
        from_transformers(folder)


def test_weights_of_another_model_are_refused(bart_folder):
    folder, _ = bart_folder
    state = load_file(folder / "model.safetensors")
    del state["model.encoder.layers.1.fc1.bias"]
    state["model.encoder.extra.weight"] = torch.zeros(2)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"lack tensors \['model.encoder.layers.1.fc1.bias'\]"):
        from_transformers(folder)


def test_tensors_the_family_never_reads_are_skipped_and_a_missing_logits_bias_is_zero(tmp_path, bart_folder):
    t5 = native_model("t5_v1_1")
    to_transformers(t5, tmp_path / "t5")
    state = load_file(tmp_path / "t5" / "model.safetensors")
    state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(8, 3)
    save_file(state, tmp_path / "t5" / "model.safetensors")
    assert torch.equal(logits(from_transformers(tmp_path / "t5"), 0, 0), logits(t5, 0, 0))
    folder, _ = bart_folder
    state = load_file(folder / "model.safetensors")
    del state["final_logits_bias"]
    save_file(state, folder / "model.safetensors")
    assert not from_transformers(folder).final_logits_bias.any()


def test_the_toolkits_own_tokenizer_is_refused_as_transformers_cannot_load_it(tmp_path):
    from tokenizers import Tokenizer, models

    from s2s.tokenization import load_tokenizer

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": 4}
    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(TypeError, match=r"toolkit's own HFTokenizer.*AutoTokenizer.from_pretrained"):
        to_transformers(native_model("bart"), tmp_path / "out", tokenizer=tokenizer)
    assert not (tmp_path / "out").exists()
