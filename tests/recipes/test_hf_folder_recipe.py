"""A Hugging Face model folder given to the recipes runs on our engine by default: the translation recipe
fine-tunes the imported model (ours, not transformers'), its loss falls, a run stopped at a checkpoint and
resumed ends with the same weights, and the folder's generation settings travel to the saved model;
recipes.generate decodes the folder as transformers' generate does; `--model_engine transformers` keeps
Hugging Face's model; the wrong engine for a folder, or a family the import lacks, is refused by name."""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("s2s.seq2seq_trainer", reason="needs s2s.seq2seq_trainer.Seq2SeqTrainer")
transformers = pytest.importorskip("transformers")

from recipes import generate, pipeline, translation  # noqa: E402
from recipes.hf_models import load_model_folder  # noqa: E402
from s2s.model_weights import read_model_weights  # noqa: E402
from s2s.models import TransformerConfig, TransformerForConditionalGeneration, UnsupportedModelError  # noqa: E402
from tests.s2s.models.hf_toys import VOCAB, hf_model  # noqa: E402
from tests.s2s.test_trainer_resume import StopAt  # noqa: E402

# Special tokens at the ids each family's config gives them (hf_toys' configs).
SPECIALS = {
    "bart": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    "marian": {"</s>": 0, "<unk>": 1, "<pad>": VOCAB - 1},
    "t5": {"<pad>": 0, "</s>": 1, "<unk>": 2},
}
ROLES = {"<s>": "bos_token", "</s>": "eos_token", "<pad>": "pad_token", "<unk>": "unk_token"}

# A corpus small enough to learn by heart in a few dozen updates; every word is a token of the tokenizer.
PAIRS = [
    ("ein kleiner hund läuft", "a small dog runs"),
    ("zwei große katzen schlafen", "two big cats sleep"),
    ("der rote ball", "the red ball"),
    ("ein blaues auto fährt", "a blue car drives"),
    ("die katze schläft", "the cat sleeps"),
    ("zwei kleine hunde laufen", "two small dogs run"),
    ("der große baum", "the big tree"),
    ("ein rotes haus", "a red house"),
]
WORDS = sorted({word for pair in PAIRS for side in pair for word in side.split()})


def word_tokenizer(family: str):
    """A transformers tokenizer over whole words that ends every sequence with eos (BART: also starts with
    bos), as the families' own tokenizers do; ids past the words are filler, so every id decodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    special = SPECIALS[family]
    free = [i for i in range(VOCAB) if i not in special.values()]
    names = WORDS + [f"x{i}" for i in range(len(free) - len(WORDS))]
    vocab = {**dict(zip(names, free)), **special}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    template = "<s> $A </s>" if "<s>" in special else "$A </s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, special[t]) for t in ("<s>", "</s>") if t in special]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, **{ROLES[token]: token for token in special}
    )


def hf_folder(family: str, folder, *, generation: dict | None = None):
    """A saved random-weight HF model of `family` with its tokenizer, as a user's local folder would be."""
    model = hf_model(family)
    if generation:
        for key, value in generation.items():
            setattr(model.generation_config, key, value)
    model.save_pretrained(folder)
    word_tokenizer(family).save_pretrained(folder)
    return folder


def write_jsonl(path, pairs):
    path.write_text(
        "".join(json.dumps({"translation": {"de": de, "en": en}}) + "\n" for de, en in pairs),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def trainers(monkeypatch):
    """The trainers the recipe builds (in order); `stop_at` adds a StopAt(step) to the next one."""
    built, stops = [], []
    original = pipeline.build_trainer

    def recording(*args, **kwargs):
        trainer = original(*args, **kwargs)
        if stops:
            trainer.add_callback(StopAt(stops.pop()))
        built.append(trainer)
        return trainer

    monkeypatch.setattr(pipeline, "build_trainer", recording)
    return built, stops


STEPS = 30
# The folder's own decoding settings: they must reach evaluation, prediction and the saved model.
FOLDER_GENERATION = {"num_beams": 2, "max_length": 10, "forced_bos_token_id": 0}


def train_argv(folder, data, out, cache, *extra):
    return [
        "--do_train", "--do_predict", "--predict_with_generate", "--model_name_or_path", str(folder),
        "--train_file", str(data / "train.jsonl"), "--test_file", str(data / "train.jsonl"),
        "--source_lang", "de", "--target_lang", "en", "--max_source_length", "16", "--max_target_length", "16",
        "--per_device_train_batch_size", "8", "--max_steps", str(STEPS), "--learning_rate", "0.01",
        "--lr_scheduler_type", "linear", "--warmup_steps", "3", "--logging_steps", "5",
        "--save_strategy", "steps", "--save_steps", "12", "--seed", "0", "--output_dir", str(out),
        "--dataset_cache_dir", str(cache), "--report_to", "none", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bart_job(tmp_path_factory):
    """A BART folder, the corpus, and one uninterrupted fine-tuning run on it (shared: a run costs seconds)."""
    root = tmp_path_factory.mktemp("bart_job")
    folder = hf_folder("bart", root / "bart", generation=FOLDER_GENERATION)
    (root / "data").mkdir()
    write_jsonl(root / "data" / "train.jsonl", PAIRS)
    built = []
    original = pipeline.build_trainer

    def recording(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    pipeline.build_trainer = recording
    try:
        results = translation.main(train_argv(folder, root / "data", root / "straight", root / "cache"))
    finally:
        pipeline.build_trainer = original
    return root, built[0], results


def logged_losses(history):
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


def test_fine_tuning_an_imported_folder_trains_our_model_and_its_loss_falls(bart_job):
    root, trainer, results = bart_job
    assert type(trainer.model) is TransformerForConditionalGeneration  # ours, not transformers' BART
    losses = [loss for _, loss in logged_losses(trainer.state.log_history)]
    assert len(losses) == STEPS // 5
    assert losses[-1] < 0.5 * losses[0], losses  # a memorisable corpus: the loss must fall, not wander
    # what the run saved is an s2s folder that our from_pretrained reads, with the weights trained
    out = root / "straight"
    assert json.loads((out / "config.json").read_text())["model_type"] == TransformerConfig.model_type
    reloaded = TransformerForConditionalGeneration.from_pretrained(out)
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_the_folders_generation_settings_decide_prediction_and_travel_with_the_model(bart_job, tmp_path):
    root, trainer, results = bart_job
    out = root / "straight"
    saved = json.loads((out / "generation_config.json").read_text())
    assert (
        saved["num_beams"] == 2 and saved["forced_bos_token_id"] == 0 and saved["decoder_start_token_id"] == 2
    )
    # prediction used the folder's settings (2 beams, bos forced after the decoder start): recipes.generate
    # on the saved model, which reads them from there, writes the same lines
    (tmp_path / "in.de").write_text("".join(de + "\n" for de, _ in PAIRS), encoding="utf-8")
    assert generate.main([str(out), "--input", str(tmp_path / "in.de"), "--output", str(tmp_path / "o")]) == 0
    predicted = (out / "generated_predictions.txt").read_text(encoding="utf-8")
    assert (tmp_path / "o").read_text(encoding="utf-8") == predicted
    with torch.no_grad():
        first = trainer.model.generate(torch.tensor([[0, 10, 11, 2]]), max_new_tokens=3)
    assert first[0, :2].tolist() == [2, 0]  # decoder start, then the forced bos


def test_stopped_at_a_checkpoint_and_resumed_ends_with_the_uninterrupted_weights(bart_job, trainers):
    root, straight, _ = bart_job
    built, stops = trainers
    argv = train_argv(root / "bart", root / "data", root / "resumed", root / "cache", "--do_predict", "false")
    stops.append(12)
    translation.main(argv)
    assert built[-1].state.global_step == 12 and (root / "resumed" / "checkpoint-12").is_dir()
    translation.main([*argv, "--resume_from_checkpoint", "true"])
    resumed = built[-1]
    assert resumed.state.global_step == STEPS
    assert logged_losses(resumed.state.log_history) == logged_losses(straight.state.log_history)
    final, expected = read_model_weights(root / "resumed"), read_model_weights(root / "straight")
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name


# ----------------------------------------------------------------------------------------------------------------
# recipes.generate on a Hugging Face folder


SOURCES = ["ein kleiner hund", "zwei große katzen schlafen", "", "der rote ball läuft x3 x7"]


def hf_greedy(folder, sources, max_new_tokens):
    """transformers' own greedy outputs with the folder's settings, one source at a time (no padding)."""
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    lines = []
    for text in sources:
        if not text:
            lines.append("")
            continue
        ids = tokenizer([text], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, num_beams=1, max_new_tokens=max_new_tokens, do_sample=False)
        lines.append(tokenizer.decode(out[0], skip_special_tokens=True).strip())
    return lines


def generate_file(folder, tmp_path, *extra):
    (tmp_path / "in.txt").write_text("".join(s + "\n" for s in SOURCES), encoding="utf-8")
    argv = [str(folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.txt")]
    assert generate.main([*argv, "--num_beams", "1", "--max_new_tokens", "6", *extra]) == 0
    return (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize("family", ["bart", "marian", "t5"])
def test_generate_decodes_a_hf_folder_on_our_engine_as_transformers_does(tmp_path, family, monkeypatch):
    folder = hf_folder(family, tmp_path / family)
    loaded = []
    original = generate.load_model
    monkeypatch.setattr(
        generate, "load_model", lambda *a, **k: loaded.append(original(*a, **k)) or loaded[-1]
    )
    expected = hf_greedy(folder, SOURCES, 6)
    assert any(expected)  # the comparison means something only if the model says anything
    ours = generate_file(folder, tmp_path)
    assert type(loaded[-1][0]) is TransformerForConditionalGeneration
    assert ours == expected
    theirs = generate_file(folder, tmp_path, "--model_engine", "transformers")
    assert not isinstance(loaded[-1][0], TransformerForConditionalGeneration)
    assert theirs == expected


def test_predict_only_recipe_on_a_hf_folder_gives_the_same_lines_on_either_engine(tmp_path, trainers):
    built, _ = trainers
    folder = hf_folder("marian", tmp_path / "marian")
    write_jsonl(tmp_path / "test.jsonl", PAIRS[:4])
    lines = {}
    for engine in ("s2s", "transformers"):
        argv = [
            "--do_predict", "--predict_with_generate", "--model_name_or_path", str(folder),
            "--model_engine", engine, "--test_file", str(tmp_path / "test.jsonl"), "--source_lang", "de",
            "--target_lang", "en", "--max_source_length", "16", "--max_target_length", "16",
            "--val_max_target_length", "6", "--num_beams", "1", "--output_dir", str(tmp_path / engine),
            "--dataset_cache_dir", str(tmp_path / "cache"), "--report_to", "none", "--disable_tqdm", "true",
        ]  # fmt: skip
        translation.main(argv)
        lines[engine] = (tmp_path / engine / "generated_predictions.txt").read_text(encoding="utf-8")
        is_ours = isinstance(built[-1].model, TransformerForConditionalGeneration)
        assert is_ours == (engine == "s2s")
    assert lines["s2s"] == lines["transformers"] and lines["s2s"].strip()


# ----------------------------------------------------------------------------------------------------------------
# refusals


def test_an_unsupported_family_names_itself_the_supported_ones_and_the_way_out(tmp_path, capsys):
    folder = hf_folder("bart", tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "pegasus"}))
    with pytest.raises(UnsupportedModelError) as err:
        load_model_folder(folder, "s2s")
    message = str(err.value)
    for part in (
        "model_type 'pegasus' is not supported",
        "bart, mbart, marian",
        "--model_engine transformers",
    ):
        assert part in message
    # the command line ends with the one-line error, not a traceback
    assert generate.run_command(generate.main, [str(folder)]) == 2
    assert "--model_engine transformers keeps" in capsys.readouterr().err


def test_the_transformers_engine_refuses_an_s2s_folder_and_a_new_model(bart_job, tmp_path):
    root, _, _ = bart_job
    with pytest.raises(ValueError, match="holds an s2s model .* drop --model_engine transformers"):
        generate.load_model(root / "straight", engine="transformers")
    argv = [
        "--do_train", "--model_engine", "transformers", "--train_file", str(root / "data" / "train.jsonl"),
        "--source_lang", "de", "--target_lang", "en", "--vocab_size", "40", "--max_steps", "1",
        "--output_dir", str(tmp_path / "new"), "--dataset_cache_dir", str(root / "cache"), "--report_to", "none",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="without one the job builds a new s2s model"):
        translation.main(argv)


def test_the_transformers_engine_without_transformers_says_what_to_install(tmp_path, monkeypatch):
    folder = hf_folder("bart", tmp_path / "bart")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"needs transformers \(pip install transformers\)"):
        load_model_folder(folder, "transformers")
    # the default engine does not need it for the model: the import reads the folder's files itself
    assert type(load_model_folder(folder, "s2s")) is TransformerForConditionalGeneration


def test_pickled_weights_are_refused_with_the_ways_to_use_them(tmp_path):
    folder = hf_folder("bart", tmp_path / "bart")
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(folder))
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, safe_serialization=False)  # the older pytorch_model.bin
    assert (folder / "pytorch_model.bin").is_file()
    with pytest.raises(
        ValueError, match=r"pytorch_model.bin is a pickle.*safe_serialization=True.*allow_pickle"
    ):
        load_model_folder(folder, "s2s")
