import json
import math

import pytest

from recipes.plotting import curves, load_log_history, main, plot_learning_curves


def synthetic_history(steps: int = 40, eval_every: int = 10) -> list[dict]:
    history = []
    for step in range(1, steps + 1):
        history.append(
            {
                "step": step,
                "epoch": step / steps,
                "loss": 5.0 / step,
                "learning_rate": 1e-3 * step / steps,
                "grad_norm": 2.0 / step,
            }
        )
        if step % eval_every == 0:
            history.append(
                {
                    "step": step,
                    "eval_loss": 4.0 / step,
                    "eval_bleu": 3.0 * step,
                    "eval_rouge1": 0.5 * step,
                    "eval_runtime": 1.5,
                    "eval_samples_per_second": 100.0,
                }
            )
    history.append({"train_runtime": 12.0, "train_loss": 1.0})  # final summary: no step
    return history


def test_pngs_written_and_non_empty(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 40, "log_history": synthetic_history()}))
    paths = plot_learning_curves(state, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        f"learning_curve_{n}.png" for n in ("loss", "learning_rate", "grad_norm", "eval_bleu", "eval_rouge1")
    )
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000


def test_curves_skip_bookkeeping_non_finite_and_stepless_entries():
    history = synthetic_history(steps=4, eval_every=2)
    history[1]["loss"] = math.nan
    for entry in history[:-1]:
        entry["nonfinite_steps" if "loss" in entry else "eval_ter"] = 0
    series = curves(history)
    assert "nonfinite_steps" not in series  # zero throughout: nothing to see
    assert series["eval_ter"][1] == [0.0, 0.0]  # a metric at zero is a result
    assert "eval_runtime" not in series and "epoch" not in series and "train_runtime" not in series
    assert series["loss"][0] == [1.0, 3.0, 4.0]  # step 2 was NaN: a gap, not a zero
    assert series["eval_bleu"] == ([2.0, 4.0], [6.0, 12.0])
    assert "train_loss" not in series  # only in the summary entry, which has no step


def test_accepts_a_state_dict_or_a_list(tmp_path):
    history = synthetic_history(steps=3, eval_every=3)
    assert load_log_history({"log_history": history}) == history
    assert len(plot_learning_curves(history, tmp_path)) == 5
    assert plot_learning_curves([], tmp_path / "empty") == []


def test_clear_errors_for_bad_state_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        load_log_history(tmp_path / "missing.json")
    broken = tmp_path / "trainer_state.json"
    broken.write_text('{"log_history": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_log_history(broken)
    with pytest.raises(ValueError, match="needs a 'log_history'"):
        load_log_history({"global_step": 3})


def test_command_line_writes_next_to_the_state(tmp_path, capsys):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"log_history": synthetic_history(steps=5, eval_every=5)}))
    assert main([str(state)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed and all((tmp_path / name.split("/")[-1]).is_file() for name in printed)
