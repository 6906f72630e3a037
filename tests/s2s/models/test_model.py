"""TransformerForConditionalGeneration: loss, masks, cached decoding, save/load, checkpointing, training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from s2s.generation import GenerationConfig
from s2s.models import Seq2SeqLMOutput, TransformerConfig, TransformerForConditionalGeneration

PAD, START, EOS = 0, 2, 3


def tiny_config(**overrides) -> TransformerConfig:
    options = dict(
        vocab_size=24,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=4,
        ffn_dim=64,
        dropout=0.0,
        max_position_embeddings=64,
    )
    options.update(overrides)
    return TransformerConfig(**options)


def tiny_model(seed: int = 0, **overrides) -> TransformerForConditionalGeneration:
    torch.manual_seed(seed)
    return TransformerForConditionalGeneration(tiny_config(**overrides)).eval()


def source_batch(seed: int = 0, batch: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 24, (batch, length), generator=g)
    ids[0, length - 2 :] = PAD  # one padded source
    return ids, (ids != PAD).long()


def test_presets_and_config_round_trip(tmp_path):
    small = TransformerConfig.preset("small", vocab_size=8000)
    assert (small.d_model, small.encoder_layers, small.decoder_layers, small.num_heads, small.ffn_dim) == (
        256,
        3,
        3,
        4,
        1024,
    )
    assert TransformerConfig.preset("tiny").d_model == 64
    assert TransformerConfig.preset("base").encoder_layers == 6
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        TransformerConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny_config(num_heads=5)
    small.save_pretrained(tmp_path)
    assert TransformerConfig.from_pretrained(tmp_path) == small
    with pytest.raises(ValueError, match="did you mean 'd_model'"):
        TransformerConfig.from_dict({"d_modle": 3})


def test_loss_is_mean_cross_entropy_over_labelled_tokens():
    model = tiny_model()
    ids, mask = source_batch()
    labels = torch.randint(4, 24, (3, 5))
    labels[1, 3:] = -100
    out = model(ids, mask, labels=labels)
    assert isinstance(out, Seq2SeqLMOutput)
    expected = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert out[0] is out.loss and out["logits"] is out.logits and out[1] is out.logits
    decoder_ids = model.prepare_decoder_input_ids_from_labels(labels)
    assert decoder_ids[:, 0].tolist() == [START] * 3
    assert decoder_ids[1, 4] == PAD  # the -100 shifted in becomes pad
    assert torch.equal(decoder_ids[:, 1:], labels[:, :-1].clamp_min(PAD))
    explicit = model(ids, mask, decoder_input_ids=decoder_ids, labels=labels)
    torch.testing.assert_close(explicit.loss, out.loss)
    as_tuple = model(ids, mask, decoder_input_ids=decoder_ids, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.logits)


def test_loss_is_fp32_under_bf16_autocast():
    model = tiny_model()
    ids, mask = source_batch()
    labels = torch.randint(4, 24, (3, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask, labels=labels)
    assert out.logits.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32
    out.loss.backward()


def test_source_padding_does_not_change_the_result():
    model = tiny_model()
    ids = torch.randint(4, 24, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    dec = torch.tensor([[START, 5, 6, 7]])
    short = model(ids, decoder_input_ids=dec).logits
    long = model(padded, (padded != PAD).long(), decoder_input_ids=dec).logits
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)


def test_decoder_padding_mask_leaves_real_positions_unchanged():
    model = tiny_model()
    ids, mask = source_batch()
    dec = torch.tensor([[START, 5, 6, PAD, PAD]] * 3)
    plain = model(ids, mask, decoder_input_ids=dec).logits
    masked = model(ids, mask, decoder_input_ids=dec, decoder_attention_mask=(dec != PAD).long()).logits
    torch.testing.assert_close(plain[:, :3], masked[:, :3], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(masked).all()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pre_norm": False, "position_embedding": "learned", "activation": "gelu"},
        {
            "share_embeddings": False,
            "tie_word_embeddings": False,
            "activation": "swiglu",
            "scale_embedding": False,
        },
    ],
)
def test_cached_decoding_equals_full_forward(overrides):
    model = tiny_model(**overrides)
    ids, mask = source_batch()
    dec = torch.cat([torch.full((3, 1), START), torch.randint(4, 24, (3, 5))], dim=1)
    full = model(ids, mask, decoder_input_ids=dec).logits
    with torch.no_grad():
        cache = model.start_decoding(model.encode(ids, mask), mask, rows_per_source=1, max_steps=dec.size(1))
        steps = [model.decode_step(dec[:, t], cache) for t in range(dec.size(1))]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cache_reorder_equals_forward_of_reordered_histories(precision):
    """Two rows per source; after each reorder a row continues another row's history (same source)."""
    model = tiny_model()
    ids, mask = source_batch(batch=2)
    g = torch.Generator().manual_seed(3)
    tokens = torch.cat([torch.full((4, 1), START), torch.randint(4, 24, (4, 5), generator=g)], dim=1)
    reorders = {2: torch.tensor([1, 1, 3, 2]), 4: torch.tensor([1, 0, 2, 2])}  # step -> rows
    history = tokens.clone()  # what each row's sequence is after the reorders (the uncached reference)
    logits = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), autocast:
        cache = model.start_decoding(model.encode(ids, mask), mask, rows_per_source=2, max_steps=6)
        for t in range(6):
            if t in reorders:
                cache.reorder(reorders[t])
                history = torch.cat([history[reorders[t], :t], tokens[:, t:]], dim=1)
                logits = [step[reorders[t]] for step in logits]  # earlier steps belong to the new rows too
            logits.append(model.decode_step(history[:, t], cache).float())
        full = model(ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), decoder_input_ids=history)
    tol = {"atol": 1e-5, "rtol": 1e-4} if precision == "fp32" else {"atol": 0.1, "rtol": 0.05}
    torch.testing.assert_close(torch.stack(logits, 1), full.logits.float(), **tol)


class _Histories:
    def __init__(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.ids, self.mask = ids, mask
        self.history = ids.new_zeros(ids.size(0), 0)

    def reorder(self, rows: torch.Tensor) -> None:
        self.history = self.history[rows]


class UncachedModel:
    """The decoding protocol over full forward passes (no cache): the reference for cached decoding."""

    def __init__(self, model: TransformerForConditionalGeneration) -> None:
        self.model = model

    def encode(self, ids, mask):
        return ids, mask

    def start_decoding(self, state, mask, *, rows_per_source, max_steps):
        ids, mask = state
        return _Histories(
            ids.repeat_interleave(rows_per_source, 0), mask.repeat_interleave(rows_per_source, 0)
        )

    def decode_step(self, tokens, cache):
        cache.history = torch.cat([cache.history, tokens[:, None]], dim=1)
        return self.model(cache.ids, cache.mask, decoder_input_ids=cache.history).logits[:, -1]


def check_cached_equals_uncached(*, device: str, num_beams: int, tolerance: float) -> None:
    """Beam or greedy decoding with the KV cache gives the tokens and scores of re-running the whole model."""
    from s2s.generation import generate

    model = tiny_model(seed=4).to(device)
    ids, mask = (t.to(device) for t in source_batch())
    options = dict(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=7,
        no_repeat_ngram_size=2,
        return_dict_in_generate=True,
        output_scores=True,
    )
    cached = model.generate(ids, mask, **options)
    config = model.generation_config.copy()
    config.update(**options)
    reference = generate(UncachedModel(model), ids, mask, generation_config=config)
    assert torch.equal(cached.sequences, reference.sequences)
    torch.testing.assert_close(
        cached.sequences_scores, reference.sequences_scores, atol=tolerance, rtol=tolerance
    )


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_generation_equals_uncached_generation(num_beams):
    check_cached_equals_uncached(device="cpu", num_beams=num_beams, tolerance=1e-5)


def test_generate_greedy_equals_uncached_argmax_loop():
    model = tiny_model(seed=1)
    ids, mask = source_batch()
    out = model.generate(ids, mask, max_new_tokens=6)
    dec = torch.full((3, 1), START)
    done = torch.zeros(3, dtype=torch.bool)
    for _ in range(6):
        nxt = model(ids, mask, decoder_input_ids=dec).logits[:, -1].argmax(-1)
        nxt = nxt.masked_fill(done, PAD)
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        done |= nxt == EOS
    assert torch.equal(out, dec[:, : out.size(1)])


def test_generate_one_beam_equals_greedy_and_beams_are_ranked():
    model = tiny_model(seed=2)
    ids, mask = source_batch()
    greedy = model.generate(ids, mask, max_new_tokens=6)
    gen = model.generation_config.copy()
    gen.update(max_new_tokens=6, early_stopping=True)
    from s2s.generation import beam_search, resolve_max_new_tokens

    state = model.encode(ids, mask)
    beam, _ = beam_search(
        model, state, mask, config=gen, limits=resolve_max_new_tokens(gen, mask.sum(1)), start=START, pad=PAD
    )
    assert torch.equal(beam, greedy)
    out = model.generate(
        ids,
        mask,
        num_beams=4,
        num_return_sequences=4,
        max_new_tokens=6,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences.shape[0] == 12
    scores = out.sequences_scores.view(3, 4)
    assert torch.equal(scores, scores.sort(dim=1, descending=True).values)


def test_generate_rejects_unknown_arguments():
    model = tiny_model()
    ids, mask = source_batch()
    with pytest.raises(ValueError, match="does not use: \\['beam_size'\\]"):
        model.generate(ids, mask, beam_size=3)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(ids, mask, max_new_tokens=100)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(share_embeddings=True, tie_word_embeddings=True)
    model.generation_config.update(num_beams=3)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json",
        "model.safetensors",
        "generation_config.json",
    }
    loaded = TransformerForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask = source_batch()
    labels = torch.randint(4, 24, (3, 5))
    torch.testing.assert_close(
        loaded(ids, mask, labels=labels).logits, model(ids, mask, labels=labels).logits
    )
    assert loaded.generation_config.num_beams == 3
    assert loaded.output_weight() is loaded.embed_tokens.weight  # still tied after loading
    untied = tiny_model(share_embeddings=False, tie_word_embeddings=False)
    untied.save_pretrained(tmp_path / "untied")
    again = TransformerForConditionalGeneration.from_pretrained(tmp_path / "untied").eval()
    torch.testing.assert_close(
        again(ids, mask, labels=labels).logits, untied(ids, mask, labels=labels).logits
    )


def test_load_errors_are_clear(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        TransformerForConditionalGeneration.from_pretrained(tmp_path / "nowhere")
    # missing weights
    (tmp_path / "noweights").mkdir()
    model.config.save_pretrained(tmp_path / "noweights")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        TransformerForConditionalGeneration.from_pretrained(tmp_path / "noweights")
    # corrupt weights
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        TransformerForConditionalGeneration.from_pretrained(corrupt)
    # shape mismatch: config says another vocabulary
    mismatch = tmp_path / "mismatch"
    model.save_pretrained(mismatch)
    data = json.loads((mismatch / "config.json").read_text())
    data["vocab_size"] = 30
    (mismatch / "config.json").write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"'embed_tokens.weight' has shape \(24, 32\) in the file but \(30, 32\)"
    ):
        TransformerForConditionalGeneration.from_pretrained(mismatch)
    # config of another model type
    other = tmp_path / "bart"
    model.save_pretrained(other)
    (other / "config.json").write_text(json.dumps({"model_type": "bart", "d_model": 32}))
    with pytest.raises(ValueError, match="model_type 'bart'"):
        TransformerForConditionalGeneration.from_pretrained(other)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = tiny_model(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing == checkpointing
        ids, mask = source_batch()
        labels = torch.randint(4, 24, (3, 5), generator=torch.Generator().manual_seed(1))
        torch.manual_seed(123)
        model(ids, mask, labels=labels).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for plain, ckpt in zip(grads(False), grads(True)):
        torch.testing.assert_close(plain, ckpt)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("freeze_padding", [True, False])
def test_sparse_lookup_gradients_equal_dense_ones_and_reach_the_optimizer_dense(
    share, tie, freeze_padding, monkeypatch
):
    """With a tied output projection the lookups return sparse row gradients (see `look_up`); summed with the
    projection's dense one they must give exactly the dense lookup's gradients, over two accumulated
    backward passes, and leave every parameter a dense gradient (optimizers refuse sparse ones)."""
    ids, mask = source_batch()
    ids[1, 2] = PAD  # a padding id inside a source: its row gets no gradient when frozen
    labels = torch.randint(4, 24, (3, 5), generator=torch.Generator().manual_seed(1))
    labels[2, 3:] = -100

    def grads(dense: bool) -> dict[str, torch.Tensor]:
        if dense:
            monkeypatch.setattr(
                TransformerForConditionalGeneration,
                "look_up",
                lambda self, table, token_ids: F.embedding(token_ids, table.weight, table.padding_idx),
            )
        model = tiny_model(
            share_embeddings=share, tie_word_embeddings=tie, freeze_padding_embedding=freeze_padding
        ).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids, mask, labels=labels).loss.backward()
        model(ids[:2], mask[:2], labels=labels[:2]).loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}

    model = tiny_model(share_embeddings=share, tie_word_embeddings=tie).train()
    for table in (model.get_input_embeddings(), model.get_decoder_embeddings()):
        tied = tie and table is model.get_decoder_embeddings()
        assert model.look_up(table, ids).grad_fn._saved_sparse == tied  # the sparse path is the one tested

    sparse, dense = grads(dense=False), grads(dense=True)
    assert not any(g.is_sparse for g in sparse.values())
    for name, grad in dense.items():
        torch.testing.assert_close(sparse[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_num_parameters():
    model = tiny_model()
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - 24 * 32


def copy_batch(g: torch.Generator, batch: int = 32, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(4, 12, (batch, length), generator=g)
    ids = torch.cat([src, torch.full((batch, 1), EOS)], dim=1)
    return ids, ids.clone()  # copy task: the target is the source (with eos)


@pytest.fixture(scope="module")
def copy_model() -> tuple[TransformerForConditionalGeneration, list[float]]:
    """A tiny model trained briefly on a copy task (one thread: a few seconds even on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = TransformerForConditionalGeneration(
            tiny_config(vocab_size=16, encoder_layers=1, decoder_layers=1)
        )
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(200):
            ids, labels = copy_batch(g)
            loss = model(ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return model.eval(), losses


def test_training_on_a_copy_task_reduces_the_loss(copy_model):
    _, losses = copy_model
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert end < 0.7 * start, (start, end)


def test_bf16_autocast_generation_matches_fp32(copy_model):
    model, _ = copy_model
    ids, _ = copy_batch(torch.Generator().manual_seed(99), batch=16)
    fp32 = model.generate(ids, max_new_tokens=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.generate(ids, max_new_tokens=8)
        beams = model.generate(ids, max_new_tokens=8, num_beams=3)
    width = min(fp32.size(1), bf16.size(1))
    agreement = (fp32[:, :width] == bf16[:, :width]).float().mean()
    assert agreement > 0.9, float(agreement)
    assert beams.shape[0] == 16 and beams[:, 0].eq(START).all()


def test_generation_config_default_follows_the_model_config():
    model = tiny_model(decoder_start_token_id=5, eos_token_id=6)
    assert isinstance(model.generation_config, GenerationConfig)
    assert (model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id) == (5, 6)
    ids, mask = source_batch()
    assert model.generate(ids, mask, max_new_tokens=2)[:, 0].eq(5).all()


# ------------------------------------------------------------------------------------------ torch.compile
def _compile_batch() -> dict[str, torch.Tensor]:
    ids, mask = source_batch()
    labels = torch.randint(4, 24, (3, 5), generator=torch.Generator().manual_seed(1))
    labels[2, 3:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_training_pass_compiles_as_one_graph(dropout):
    """torch.compile(fullgraph=True) traces forward and backward without a graph break (a break would raise
    here): no host read of the padding mask, the framework's dropout while compiling. The "eager" backend
    checks the tracing without a C++ build; the losses match the uncompiled model's."""
    model = tiny_model(dropout=dropout).train()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    batch = _compile_batch()
    torch.manual_seed(0)
    loss = compiled(**batch).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if dropout == 0.0:
        torch.testing.assert_close(loss, model(**batch).loss)


def test_trainer_trains_a_compiled_model(tmp_path):
    from s2s.trainer import Trainer
    from s2s.training_args import TrainingArguments

    examples = [{"input_ids": row.tolist(), "labels": [5, 6, 7, EOS]} for row in torch.randint(4, 24, (8, 6))]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        torch_compile=True,
        torch_compile_backend="eager",
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
    )
    model = tiny_model(dropout=0.1)
    before = model.embed_tokens.weight.detach().clone()

    def collate(features):
        batch = {k: torch.tensor([f[k] for f in features]) for k in ("input_ids", "labels")}
        return {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}

    output = Trainer(model=model, args=args, data_collator=collate, train_dataset=examples).train()
    assert output.global_step == 3 and torch.isfinite(torch.tensor(output.training_loss))
    assert not torch.equal(model.embed_tokens.weight.detach(), before)
