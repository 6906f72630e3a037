"""from_transformers: an imported Hugging Face model computes what transformers computes (logits, loss, greedy
and beam generation) for every supported family, with its generation settings."""

from __future__ import annotations

import json

import pytest
import torch

from s2s.models import from_transformers
from tests.s2s.models.hf_toys import FAMILIES, hf_model, labels_batch, padded_batch, saved_hf_model

transformers = pytest.importorskip("transformers")

TOLERANCE = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """family -> (HF model, our model imported from its saved folder), built once per module."""
    pairs = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        hf = saved_hf_model(family, folder)
        pairs[family] = (hf, from_transformers(folder))
    return pairs


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_loss_equal_hf_on_a_padded_batch(imported, family):
    hf, ours = imported[family]
    ids, mask = padded_batch(hf.config.pad_token_id)
    labels = labels_batch()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)  # decoder inputs built from labels
        mine = ours(ids, mask, labels=labels)
        torch.testing.assert_close(mine.logits, theirs.logits, **TOLERANCE)
        torch.testing.assert_close(mine.loss, theirs.loss, **TOLERANCE)
        decoder_ids = labels.clamp_min(5)
        decoder_ids[:, 0] = hf.config.decoder_start_token_id
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        mine = ours(ids, mask, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(mine, theirs, **TOLERANCE)


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_generation_equals_hf_generate(imported, family, num_beams):
    hf, ours = imported[family]
    ids, mask = padded_batch(hf.config.pad_token_id, seed=2)
    settings = dict(
        num_beams=num_beams,
        max_new_tokens=6,
        min_length=0,
        length_penalty=1.0,
        no_repeat_ngram_size=0,
        early_stopping=False,
        do_sample=False,
    )
    with torch.no_grad():
        theirs = hf.generate(input_ids=ids, attention_mask=mask, **settings)
        mine = ours.generate(ids, mask, **settings)
    assert mine.tolist() == theirs.tolist()


def test_m2m100_positions_follow_the_padding_on_a_left_padded_batch(imported):
    hf, ours = imported["m2m_100"]
    ids, mask = padded_batch(hf.config.pad_token_id, left=True)
    decoder_ids = torch.tensor([[2, 9, 8, 1, 1]] * 3)  # right-padded targets: pads take the zero row
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        mine = ours(ids, mask, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_a_model_object_imports_like_its_folder(imported):
    hf, from_folder = imported["t5_v1_1"]
    from_object = from_transformers(hf)
    ids, mask = padded_batch(hf.config.pad_token_id)
    decoder_ids = torch.tensor([[0, 5, 6]] * 3)
    with torch.no_grad():
        a = from_object(ids, mask, decoder_input_ids=decoder_ids).logits
        b = from_folder(ids, mask, decoder_input_ids=decoder_ids).logits
    assert torch.equal(a, b)
    assert from_object.generation_config.to_dict() == from_folder.generation_config.to_dict()


def test_generation_settings_come_from_the_folder(tmp_path):
    saved_hf_model("mbart", tmp_path)
    model = from_transformers(tmp_path)
    settings = model.generation_config
    assert (settings.decoder_start_token_id, settings.forced_bos_token_id, settings.forced_eos_token_id) == (
        2,
        7,
        2,
    )
    assert (settings.pad_token_id, settings.eos_token_id) == (1, 2)
    (tmp_path / "generation_config.json").write_text(
        json.dumps(
            {"decoder_start_token_id": 2, "num_beams": 5, "max_length": 33, "transformers_version": "x"}
        )
    )
    settings = from_transformers(tmp_path).generation_config
    assert (settings.num_beams, settings.max_length, settings.forced_bos_token_id) == (5, 33, None)


def test_legacy_generation_keys_in_config_json_are_read(tmp_path):
    saved_hf_model("marian", tmp_path)
    (tmp_path / "generation_config.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(num_beams=3, max_length=40, bad_words_ids=[[59]])
    (tmp_path / "config.json").write_text(json.dumps(config))
    settings = from_transformers(tmp_path).generation_config
    assert (settings.num_beams, settings.max_length, settings.bad_words_ids) == (3, 40, [[59]])


def test_a_generation_setting_without_equivalent_is_refused_by_name(tmp_path):
    saved_hf_model("bart", tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"num_beam_groups": 2}))
    with pytest.raises(ValueError, match=r"generation_config.json.*num_beam_groups=2.*s2s.generation"):
        from_transformers(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"num_beam_groups": 1, "use_cache": True}))
    from_transformers(tmp_path)  # the inactive value and a switch of transformers' own are fine


def test_dtype_casts_the_parameters(tmp_path):
    saved_hf_model("t5", tmp_path)
    model = from_transformers(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_hf_model_with_dropout_trains_through_our_dropout_options(tmp_path):
    """T5's one dropout_rate becomes our three dropouts and the dropout after the final norm."""
    hf = hf_model("t5")
    hf.config.dropout_rate = 0.2
    model = from_transformers(hf)
    config = model.config
    assert (config.dropout, config.attention_dropout, config.activation_dropout) == (0.2, 0.2, 0.2)
    assert config.dropout_after_final_norm
    m2m = from_transformers(hf_model("m2m_100"))
    assert (m2m.config.encoder_layerdrop, m2m.config.decoder_layerdrop) == (0.1, 0.1)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_marian_decoding_settings_ban_pad_and_renormalise_as_transformers_does(tmp_path, num_beams):
    """opus-mt folders ban the pad token and renormalise the beam scores after banning it."""
    hf = hf_model("marian")
    pad = hf.config.pad_token_id
    hf.generation_config.update(
        bad_words_ids=[[pad]], renormalize_logits=True, num_beams=num_beams, max_length=12
    )
    hf.save_pretrained(tmp_path)
    ours = from_transformers(tmp_path)
    assert (ours.generation_config.bad_words_ids, ours.generation_config.renormalize_logits) == (
        [[pad]],
        True,
    )
    ids, mask = padded_batch(pad, seed=3)
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=ids, attention_mask=mask, output_scores=True, return_dict_in_generate=True
        )
        mine = ours.generate(ids, mask, output_scores=True, return_dict_in_generate=True)
    assert mine.sequences.tolist() == theirs.sequences.tolist()
    if num_beams > 1:
        torch.testing.assert_close(mine.sequences_scores, theirs.sequences_scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["marian", "t5_v1_1"])
def test_an_imported_model_saves_and_loads_in_the_toolkit_format(imported, tmp_path, family):
    """Checkpoints of a fine-tuned import are the toolkit's own: every option and tensor survives them."""
    from s2s.models import TransformerForConditionalGeneration

    hf, ours = imported[family]
    ours.save_pretrained(tmp_path)
    loaded = TransformerForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config == ours.config
    assert loaded.generation_config.to_dict() == ours.generation_config.to_dict()
    ids, mask = padded_batch(hf.config.pad_token_id)
    decoder_ids = torch.tensor([[hf.config.decoder_start_token_id, 5, 6]] * 3)
    with torch.no_grad():
        assert torch.equal(
            loaded(ids, mask, decoder_input_ids=decoder_ids).logits,
            ours(ids, mask, decoder_input_ids=decoder_ids).logits,
        )


@pytest.mark.parametrize("family", ["bart", "marian", "t5"])
def test_fine_tuning_an_import_follows_transformers_step_by_step(family):
    """Same losses over Adam updates: every trained tensor, the frozen ones (BART's and Marian's padding row,
    Marian's positions) and T5's trained padding row (its decoder start) included."""
    hf = hf_model(family).train()
    ours = from_transformers(hf).train()
    ids, mask = padded_batch(hf.config.pad_token_id)
    labels = labels_batch()
    theirs_optimizer = torch.optim.Adam([p for p in hf.parameters() if p.requires_grad], lr=3e-3)
    ours_optimizer = torch.optim.Adam(ours.parameters(), lr=3e-3)
    for _ in range(4):
        for model, optimizer, loss_of in (
            (hf, theirs_optimizer, lambda: hf(input_ids=ids, attention_mask=mask, labels=labels).loss),
            (ours, ours_optimizer, lambda: ours(ids, mask, labels=labels).loss),
        ):
            optimizer.zero_grad()
            loss = loss_of()
            loss.backward()
            optimizer.step()
            if model is hf:
                theirs = loss.item()
        assert loss.item() == pytest.approx(theirs, rel=1e-5)
