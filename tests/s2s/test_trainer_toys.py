"""Tiny models, data and a collator shared by the trainer tests (imported as ``test_trainer_toys``), with
tests of the toys themselves so that a broken toy fails here and not as a puzzling trainer failure."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from s2s.training_args import TrainingArguments

PAD, BOS, EOS = 0, 2, 3
VOCAB = 24


@dataclass
class ToyOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor

    def keys(self):
        return [k for k in ("loss", "logits") if getattr(self, k) is not None]

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else [getattr(self, k) for k in self.keys()][key]


class ToySeq2Seq(nn.Module):
    """Mean-pooled source embedding + decoder-token embedding -> tanh -> vocabulary; mean token loss."""

    main_input_name = "input_ids"

    def __init__(self, *, d_model: int = 16, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.src = nn.Embedding(VOCAB, d_model, padding_idx=PAD)
        self.tgt = nn.Embedding(VOCAB, d_model)
        self.hidden = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, VOCAB)
        self.dropout = nn.Dropout(dropout)
        self.calls = 0

    def prepare_decoder_input_ids_from_labels(self, labels):
        return shift_right(labels)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None):
        self.calls += 1
        if decoder_input_ids is None:
            decoder_input_ids = shift_right(labels)
        mask = ((input_ids != PAD) if attention_mask is None else attention_mask).to(self.src.weight.dtype)
        source = (self.src(input_ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        h = torch.tanh(self.hidden(self.dropout(self.tgt(decoder_input_ids) + source[:, None, :])))
        logits = self.out(h)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100
            )
        return ToyOutput(loss=loss, logits=logits)


class ToyNoLoss(ToySeq2Seq):
    """Same network, but ``forward`` takes no labels and returns only logits."""

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None):
        return super().forward(input_ids, attention_mask, decoder_input_ids).logits


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    shifted = labels.new_full(labels.shape, PAD)
    shifted[:, 0] = BOS
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, PAD)


def make_examples(n: int, *, seed: int = 0, max_len: int = 7) -> list[dict[str, list[int]]]:
    """Copy-like pairs with variable source and target lengths (targets end with eos)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        src = [rng.randrange(4, VOCAB) for _ in range(rng.randint(1, max_len))]
        tgt = [rng.randrange(4, VOCAB) for _ in range(rng.randint(1, max_len))] + [EOS]
        examples.append({"input_ids": src + [EOS], "labels": tgt})
    return examples


class ToyCollator:
    """Pads inputs with 0 and labels with -100; adds decoder_input_ids when asked (as DataCollatorForSeq2Seq
    does with a model)."""

    def __init__(self, *, decoder_input_ids: bool = False) -> None:
        self.decoder_input_ids = decoder_input_ids

    def __call__(self, features):
        src_len = max(len(f["input_ids"]) for f in features)
        tgt_len = max(len(f["labels"]) for f in features)
        input_ids = torch.tensor([f["input_ids"] + [PAD] * (src_len - len(f["input_ids"])) for f in features])
        labels = torch.tensor([f["labels"] + [-100] * (tgt_len - len(f["labels"])) for f in features])
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long(), "labels": labels}
        if self.decoder_input_ids:
            batch["decoder_input_ids"] = shift_right(labels)
        return batch


class RecordingCollator(ToyCollator):
    """A ToyCollator that appends each batch it collates to ``seen``, as a tuple of input-id tuples: the
    order a run read its data in, to compare with another run's."""

    def __init__(self, seen: list, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen = seen

    def __call__(self, features):
        self.seen.append(tuple(tuple(f["input_ids"]) for f in features))
        return super().__call__(features)


def toy_args(tmp_path, **overrides) -> TrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        disable_tqdm=True,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=0.1,
        optim="sgd",
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    return TrainingArguments(**(defaults | overrides))


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------- the toys' tests
def test_toy_collator_pads_labels_with_ignore_index():
    batch = ToyCollator(decoder_input_ids=True)(make_examples(5, seed=1))
    assert batch["input_ids"].shape[0] == 5
    lengths = (batch["labels"] != -100).sum(1)
    assert lengths.min() < lengths.max()  # variable-length targets
    assert (batch["decoder_input_ids"][:, 0] == BOS).all()


def test_toy_model_loss_is_mean_token_cross_entropy():
    batch = ToyCollator()(make_examples(4))
    model = ToySeq2Seq()
    out = model(**batch)
    logits = ToyNoLoss()(batch["input_ids"], batch["attention_mask"], shift_right(batch["labels"]))
    torch.testing.assert_close(logits, out.logits)
    mask = batch["labels"] != -100
    token_losses = nn.functional.cross_entropy(logits[mask], batch["labels"][mask], reduction="none")
    torch.testing.assert_close(out.loss, token_losses.mean())
