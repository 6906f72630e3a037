"""s2s: a sequence-to-sequence training toolkit with a Hugging Face style Trainer API.

The public names are imported lazily (PEP 562), so `import s2s` stays cheap and a script that only needs the
tokenizer does not pay for the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "TrainingArguments": "s2s.training_args",
    "Seq2SeqTrainingArguments": "s2s.seq2seq_training_args",
    "ArgumentParser": "s2s.argparser",
    "Trainer": "s2s.trainer",
    "Seq2SeqTrainer": "s2s.seq2seq_trainer",
    "EvalPrediction": "s2s.evaluation",
    "PredictionOutput": "s2s.evaluation",
    "TrainerCallback": "s2s.callbacks",
    "TrainerState": "s2s.callbacks",
    "TrainerControl": "s2s.callbacks",
    "EarlyStoppingCallback": "s2s.callbacks",
    "EvalLoopOutput": "s2s.evaluation",
    "ProgressCallback": "s2s.callbacks",
    "PrinterCallback": "s2s.callbacks",
    "DataCollatorForSeq2Seq": "s2s.data_collator",
    "DataCollatorWithPadding": "s2s.data_collator",
    "default_data_collator": "s2s.data_collator",
    "GenerationConfig": "s2s.generation",
    "GenerateOutput": "s2s.generation",
    "TransformerConfig": "s2s.models",
    "TransformerForConditionalGeneration": "s2s.models",
    "Seq2SeqLMOutput": "s2s.models",
    "Tokenizer": "s2s.tokenization",
    "BatchEncoding": "s2s.tokenization",
    "SentencePieceTokenizer": "s2s.tokenization",
    "HFTokenizer": "s2s.tokenization",
    "train_joint_tokenizer": "s2s.tokenization",
    "train_tokenizer": "s2s.tokenization",
    "load_tokenizer": "s2s.tokenization",
    "get_scheduler": "s2s.optimization",
    # Hugging Face's helper names, for scripts ported from its examples
    "set_seed": "s2s.trainer",
    "get_last_checkpoint": "s2s.last_checkpoint",
    "HfArgumentParser": "s2s.hf_aliases",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 's2s' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
