"""Train, evaluate and use a translation model, from raw text files to a scored model.

    python -m recipes.translation recipes/configs/multi30k_de_en.yaml            # a config file
    python -m recipes.translation recipes/configs/demo_multi30k.yaml --max_steps 50   # with overrides
    python -m recipes.translation --do_train --do_eval --do_predict --source_lang de --target_lang en \\
        --train_file data/train.jsonl --validation_file data/val.jsonl --test_file data/test.jsonl \\
        --output_dir out --predict_with_generate --max_tokens_per_batch 4096
    python -m recipes.translation --do_predict --model_name_or_path out --test_file new.jsonl \\
        --source_lang de --target_lang en --output_dir out/new --predict_with_generate

Writes to output_dir: the model, tokenizer and generation config; train/eval/predict/all_results.json;
generated_predictions.txt and .jsonl (source, reference, hypothesis, sentence BLEU/chrF); learning-curve PNGs;
trainer_state.json. Ends by printing the test BLEU and a few translations.
The steps themselves, top to bottom, are in recipes/pipeline.py (shared with the other recipe).
A bad argument, file or data line ends the job with `error: <message>` (exit status 2); `--debug` or
S2S_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/translation.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recipes.cli import run_command
from recipes.pipeline import run

TASK = "translation"


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    return run(TASK, argv)


if __name__ == "__main__":
    raise SystemExit(run_command(main))  # a user error: `error: <message>` and exit 2, no traceback
