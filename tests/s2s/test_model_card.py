"""The model card: Hugging Face's layout and parsing of the log history, filled from an s2s run."""

import re
from types import SimpleNamespace

import pytest
import yaml

from s2s.model_card import create_model_card, markdown_table, parse_log_history, training_hyperparameters
from s2s.training_args import TrainingArguments

# Two evaluations during training, then the end-of-training entry, then a final evaluation.
HISTORY = [
    {"loss": 3.5, "learning_rate": 1e-3, "epoch": 0.5, "step": 2},
    {"eval_loss": 3.1, "eval_bleu": 1.23456789, "eval_runtime": 0.2, "eval_samples_per_second": 40.0, "epoch": 0.5, "step": 2},
    {"loss": 2.9, "learning_rate": 5e-4, "epoch": 1.0, "step": 4},
    {"eval_loss": 2.7, "eval_bleu": 4.5, "eval_runtime": 0.2, "eval_samples_per_second": 40.0, "epoch": 1.0, "step": 4},
    {"train_runtime": 3.0, "train_loss": 3.2, "epoch": 1.0, "step": 4},
    {"eval_loss": 2.6, "eval_bleu": 5.0, "eval_gen_len": 4.0, "eval_runtime": 0.2, "epoch": 1.0, "step": 4},
]  # fmt: skip


def test_log_history_gives_one_row_per_evaluation_and_the_final_results():
    rows, results = parse_log_history(HISTORY)
    assert rows == [
        {"Training Loss": 3.5, "Epoch": 0.5, "Step": 2, "Validation Loss": 3.1, "Bleu": 1.23456789},
        {"Training Loss": 2.9, "Epoch": 1.0, "Step": 4, "Validation Loss": 2.7, "Bleu": 4.5},
    ]
    assert results == {"Loss": 2.6, "Bleu": 5.0, "Gen Len": 4.0}


def test_log_history_matches_hugging_face():
    modelcard = pytest.importorskip("transformers.modelcard")
    _, their_rows, their_results = modelcard.parse_log_history(HISTORY)
    assert parse_log_history(HISTORY) == (their_rows, their_results)
    assert markdown_table(their_rows) == modelcard.make_markdown_table(their_rows)


def test_evaluation_by_generation_without_a_loss_still_gives_results():
    # s2s skips the teacher-forced loss when compute_metrics scores generations; the card keeps the metrics.
    history = [
        {"loss": 3.0, "step": 1},
        {"train_runtime": 1.0, "step": 1},
        {"eval_bleu": 7.0, "eval_runtime": 0.1},
    ]
    assert parse_log_history(history) == ([], {"Bleu": 7.0})
    assert parse_log_history([{"loss": 3.0, "step": 1}]) == (None, None)


def test_markdown_table_rounds_and_pads():
    table = markdown_table([{"Step": 2, "Bleu": 1.23456789}, {"Step": 10, "Bleu": 4.5}])
    assert table.splitlines() == [
        "| Step | Bleu   |",
        "|:----:|:------:|",
        "| 2    | 1.2346 |",
        "| 10   | 4.5    |",
    ]


def test_hyperparameters_list_the_run_settings(tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", learning_rate=3e-4, per_device_train_batch_size=8,
        gradient_accumulation_steps=4, max_steps=100, warmup_steps=10, label_smoothing_factor=0.1, seed=7,
    )  # fmt: skip
    hyper = training_hyperparameters(args)
    assert hyper["learning_rate"] == 3e-4 and hyper["seed"] == 7 and hyper["train_batch_size"] == 8
    assert hyper["gradient_accumulation_steps"] == 4 and hyper["total_train_batch_size"] == 32
    assert hyper["training_steps"] == 100 and "num_epochs" not in hyper
    assert hyper["lr_scheduler_type"] == "linear" and hyper["lr_scheduler_warmup_steps"] == 10
    assert hyper["label_smoothing_factor"] == 0.1
    assert hyper["optimizer"].startswith(f"Use {args.optim} with betas=(0.9,0.999)")


def front_matter(card: str) -> dict:
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", card, flags=re.DOTALL).group(1))


class HubModel:
    """A model whose config names the Hub checkpoint it started from."""

    config = SimpleNamespace(_name_or_path="facebook/bart-base", is_encoder_decoder=True)


def test_card_from_a_run(tmp_path):
    output_dir = tmp_path / "bart-en-de"
    args = TrainingArguments(output_dir=str(output_dir), report_to="none", num_train_epochs=2)
    readme = create_model_card(
        output_dir, args=args, log_history=HISTORY, model=HubModel(), language=["en", "de"],
        license="apache-2.0", tags="translation", dataset_tags="wmt16", dataset="WMT16", dataset_args="de-en",
    )  # fmt: skip
    card = readme.read_text()
    meta = front_matter(card)
    assert meta["language"] == ["en", "de"] and meta["license"] == "apache-2.0"
    assert meta["base_model"] == "facebook/bart-base"  # from the model's config
    assert meta["tags"] == ["translation", "generated_from_trainer"]
    assert meta["datasets"] == ["wmt16"] and meta["metrics"] == ["bleu"]
    [result] = meta["model-index"][0]["results"]
    assert result["task"]["type"] == "text2text-generation"  # an encoder-decoder
    assert result["dataset"] == {"name": "WMT16", "type": "wmt16", "args": "de-en"}
    assert result["metrics"] == [{"name": "Bleu", "type": "bleu", "value": 5.0}]
    assert "# bart-en-de" in card
    assert (
        "fine-tuned version of [facebook/bart-base](https://huggingface.co/facebook/bart-base) on the WMT16"
        in card
    )
    assert "- Bleu: 5.0" in card and "- num_epochs: 2\n" in card
    assert "| Training Loss | Epoch | Step | Validation Loss | Bleu   |" in card
    assert re.search(r"^- s2s \S+$", card, flags=re.MULTILINE) and re.search(
        r"^- Pytorch ", card, flags=re.MULTILINE
    )


def test_card_keeps_tags_of_an_existing_readme_and_knows_local_models(tmp_path):
    (tmp_path / "README.md").write_text("---\ntags:\n- my-tag\n---\n# old card\n")
    local = SimpleNamespace(
        config=SimpleNamespace(_name_or_path=str(tmp_path))
    )  # a local folder: no base_model
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    card = create_model_card(tmp_path, args=args, log_history=[], model=local).read_text()
    meta = front_matter(card)
    assert meta["tags"] == ["generated_from_trainer", "my-tag"]
    assert "base_model" not in meta and meta["model-index"] == [{"name": tmp_path.name, "results": []}]
    assert "trained from scratch on an unknown dataset." in card
