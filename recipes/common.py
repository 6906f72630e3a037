"""The recipes' steps under their former single-module names, for code written against `recipes.common`.

The steps now live in modules with one concern each (`recipes.arguments`, `recipes.data`, `recipes.tokenizer`,
`recipes.preprocessing`, `recipes.modeling`, `recipes.training`, `recipes.averaging`, `recipes.callbacks`,
`recipes.outputs`); import from those. Nothing is defined here.
"""

from recipes.arguments import (
    DataArguments,
    ModelArguments,
    Task,
    check_arguments,
    parse_arguments,
    task_defaults,
)
from recipes.averaging import load_averaged_checkpoints
from recipes.callbacks import TimeBudgetCallback
from recipes.data import SOURCE, TARGET, fields_for, load_splits
from recipes.hf_models import is_hf_model_dir
from recipes.modeling import configure_generation, load_or_build_model
from recipes.outputs import (
    RECIPE_ARGS_FILE,
    print_summary,
    save_run_files,
    sentence_scores,
    write_predictions,
    write_results,
)
from recipes.pipeline import setup_logging
from recipes.preprocessing import TRUNCATION_FLAGS, tokenize_batch, tokenize_splits
from recipes.tokenizer import load_any_tokenizer, load_or_train_tokenizer
from recipes.training import build_trainer, evaluate, predict, train

__all__ = [
    "RECIPE_ARGS_FILE",
    "SOURCE",
    "TARGET",
    "TRUNCATION_FLAGS",
    "DataArguments",
    "ModelArguments",
    "Task",
    "TimeBudgetCallback",
    "build_trainer",
    "check_arguments",
    "configure_generation",
    "evaluate",
    "fields_for",
    "is_hf_model_dir",
    "load_any_tokenizer",
    "load_averaged_checkpoints",
    "load_or_build_model",
    "load_or_train_tokenizer",
    "load_splits",
    "parse_arguments",
    "predict",
    "print_summary",
    "save_run_files",
    "sentence_scores",
    "setup_logging",
    "task_defaults",
    "tokenize_batch",
    "tokenize_splits",
    "train",
    "write_predictions",
    "write_results",
]
