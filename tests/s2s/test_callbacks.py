import json
from types import SimpleNamespace

import pytest

from s2s.callbacks import (
    EVENTS,
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)


def flow_args(**overrides):
    base = dict(
        logging_strategy="steps",
        logging_first_step=False,
        eval_strategy="steps",
        evaluation_strategy="steps",
        eval_delay=0,
        save_strategy="steps",
        metric_for_best_model=None,
        greater_is_better=None,
    )
    return SimpleNamespace(**(base | overrides))


def test_state_json_round_trip(tmp_path):
    state = TrainerState(global_step=7, epoch=1.5, best_metric=0.25, log_history=[{"loss": 1.0, "step": 7}])
    state.stateful_callbacks = {"EarlyStoppingCallback": {"patience_counter": 2}}
    state.save_to_json(tmp_path / "s.json")
    assert TrainerState.load_from_json(tmp_path / "s.json") == state
    assert json.loads((tmp_path / "s.json").read_text())["global_step"] == 7


class Recorder(TrainerCallback):
    def __init__(self):
        self.seen = []

    def __getattribute__(self, name):
        if name in EVENTS:
            return lambda args, state, control, **kw: self.seen.append((name, sorted(kw)))
        return super().__getattribute__(name)


def test_handler_calls_every_event_with_the_shared_kwargs():
    recorder = Recorder()
    handler = CallbackHandler([recorder], model="m", optimizer="o")
    for event in EVENTS:
        getattr(handler, event)(None, TrainerState(), TrainerControl())
    assert [name for name, _ in recorder.seen] == list(EVENTS)
    assert all({"model", "optimizer", "lr_scheduler", "tokenizer"} <= set(kw) for _, kw in recorder.seen)


def test_add_pop_remove_callbacks():
    handler = CallbackHandler([DefaultFlowCallback])
    assert isinstance(handler.callbacks[0], DefaultFlowCallback)  # classes are instantiated
    stopper = EarlyStoppingCallback()
    handler.add_callback(stopper)
    assert handler.pop_callback(EarlyStoppingCallback) is stopper
    assert handler.pop_callback(EarlyStoppingCallback) is None
    handler.remove_callback(DefaultFlowCallback)
    assert handler.callbacks == []


def run_flow(args, *, max_steps, logging_steps=2, eval_steps=3, save_steps=4):
    flow, state, control = DefaultFlowCallback(), TrainerState(max_steps=max_steps), TrainerControl()
    state.logging_steps, state.eval_steps, state.save_steps = logging_steps, eval_steps, save_steps
    decided = {"log": [], "eval": [], "save": [], "stop": []}
    for step in range(1, max_steps + 1):
        state.global_step = step
        flow.on_step_end(args, state, control)
        for key, flag in (
            ("log", "should_log"),
            ("eval", "should_evaluate"),
            ("save", "should_save"),
            ("stop", "should_training_stop"),
        ):
            if getattr(control, flag):
                decided[key].append(step)
        control.reset_for_new_step()
    return decided


def test_flow_steps_strategies():
    decided = run_flow(flow_args(logging_first_step=True), max_steps=9)
    assert decided["log"] == [1, 2, 4, 6, 8]
    assert decided["eval"] == [3, 6, 9]
    assert decided["save"] == [4, 8, 9]  # the last step of a step-saving run is saved
    assert decided["stop"] == [9]


def test_flow_eval_delay_and_no_strategies():
    decided = run_flow(flow_args(eval_delay=5, logging_strategy="no", save_strategy="no"), max_steps=9)
    assert decided["eval"] == [6, 9]
    assert decided["log"] == decided["save"] == []


def test_flow_epoch_strategies():
    args = flow_args(logging_strategy="epoch", eval_strategy="epoch", save_strategy="epoch", eval_delay=2)
    state, control = TrainerState(epoch=1.0), TrainerControl()
    DefaultFlowCallback().on_epoch_end(args, state, control)
    assert control.should_log and control.should_save and not control.should_evaluate
    state.epoch = 2.0
    DefaultFlowCallback().on_epoch_end(args, state, control)
    assert control.should_evaluate


@pytest.mark.parametrize(
    ("values", "greater", "stop_at"),
    [
        ([1.0, 0.9, 0.95, 0.91, 0.8], False, 4),  # loss: improves at 2, then 2 evaluations without
        ([10, 20, 20, 21, 19, 18], True, 6),
        ([1.0, 0.5, 0.4, 0.3], False, None),
    ],
)
def test_early_stopping(values, greater, stop_at):
    args = flow_args(metric_for_best_model="bleu" if greater else "loss", greater_is_better=greater)
    cb, state, control = EarlyStoppingCallback(early_stopping_patience=2), TrainerState(), TrainerControl()
    stopped = None
    for i, value in enumerate(values, start=1):
        cb.on_evaluate(args, state, control, metrics={"eval_bleu" if greater else "eval_loss": value})
        if control.should_training_stop and stopped is None:
            stopped = i
    assert stopped == stop_at


def test_early_stopping_threshold_counts_small_gains_as_none():
    args = flow_args(metric_for_best_model="loss", greater_is_better=False)
    cb, control = (
        EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=0.1),
        TrainerControl(),
    )
    cb.on_evaluate(args, TrainerState(), control, metrics={"eval_loss": 1.0})
    cb.on_evaluate(args, TrainerState(), control, metrics={"eval_loss": 0.95})
    assert control.should_training_stop


def test_early_stopping_state_round_trip_through_handler():
    args = flow_args(metric_for_best_model="loss", greater_is_better=False)
    first = EarlyStoppingCallback(early_stopping_patience=3)
    for value in (1.0, 1.1, 1.2):
        first.on_evaluate(args, TrainerState(), TrainerControl(), metrics={"eval_loss": value})
    states = CallbackHandler([first]).state_dicts()
    second = EarlyStoppingCallback(early_stopping_patience=3)
    CallbackHandler([second]).load_state_dicts(json.loads(json.dumps(states)))
    control = TrainerControl()
    second.on_evaluate(args, TrainerState(), control, metrics={"eval_loss": 1.3})
    assert second.patience_counter == 3 and control.should_training_stop


def test_early_stopping_refuses_without_evaluation():
    with pytest.raises(ValueError, match="eval_strategy"):
        EarlyStoppingCallback().on_train_begin(
            flow_args(eval_strategy="no", evaluation_strategy="no"), TrainerState(), TrainerControl()
        )
