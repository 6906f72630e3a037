import dataclasses
import json
import logging

import pytest
import torch

from s2s.training_args import IntervalStrategy, OptimizerNames, SchedulerType, TrainingArguments


def make(**kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir="out", **kwargs)


# ------------------------------------------------------------------------------------------ refused arguments
REFUSED = [
    ({"half_precision_backend": "apex"}, "half_precision_backend"),
    ({"fp16_backend": "apex"}, "apex"),
    ({"optim": "adamw_apex_fused"}, "adamw_apex_fused"),
    ({"optim": "adamw_anyprecision"}, "adamw_anyprecision"),
    ({"fp16_opt_level": "O2"}, "fp16_opt_level"),
    ({"use_ipex": True}, "use_ipex"),
    ({"xpu_backend": "ccl"}, "xpu_backend"),
    ({"tpu_num_cores": 8}, "tpu_num_cores"),
    ({"sharded_ddp": "simple"}, "sharded_ddp"),
    ({"deepspeed": "ds_config.json"}, "deepspeed"),
    ({"push_to_hub": True}, "push_to_hub"),
    ({"hub_model_id": "me/model"}, "hub_model_id"),
    ({"hub_token": "hf_xxx"}, "hub_token"),
    ({"hub_private_repo": True}, "hub_private_repo"),
    ({"hub_strategy": "end"}, "hub_strategy"),
    ({"torchdynamo": "inductor"}, "torch_compile_backend"),
    ({"jit_mode_eval": True}, "jit_mode_eval"),
    ({"ray_scope": "all"}, "ray_scope"),
    ({"debug": "tpu_metrics_debug"}, "tpu_metrics_debug"),
    ({"report_to": "comet_ml"}, "report_to"),
    ({"ddp_backend": "hccl"}, "ddp_backend"),
]
if not torch.backends.mps.is_available():
    REFUSED.append(({"use_mps_device": True}, "use_mps_device"))
if not torch.cuda.is_available():
    REFUSED += [
        ({"fp16": True}, "fp16"),
        ({"fp16_full_eval": True}, "fp16_full_eval"),
        ({"tf32": True}, "tf32"),
    ]


@pytest.mark.filterwarnings("ignore:fp16_backend is deprecated:FutureWarning")
@pytest.mark.parametrize(("kwargs", "named"), REFUSED, ids=[next(iter(k)) for k, _ in REFUSED])
def test_refused_argument_names_itself(kwargs, named):
    with pytest.raises(ValueError, match=named):
        make(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only message")
def test_fp16_on_cpu_points_to_bf16():
    with pytest.raises(ValueError, match=r"needs a CUDA device.*bf16=True"):
        make(fp16=True)
    assert make(bf16=True).bf16


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr("s2s.arguments.checks.cuda_available", lambda: False)
    monkeypatch.setattr("s2s.arguments.checks.bf16_is_native", lambda *, on_cuda: native)
    args = make(bf16="auto")
    assert args.bf16 is native
    assert args.to_dict()["bf16"] is native  # the saved arguments say what the run did


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr("s2s.arguments.checks.cuda_available", lambda: False)
    monkeypatch.setattr("s2s.arguments.checks.bf16_is_native", lambda *, on_cuda: False)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        assert make(bf16=True).bf16 is True
    assert "no bfloat16 instructions" in caplog.text and "bf16='auto'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="s2s"):
        assert make(bf16_full_eval=True).bf16_full_eval is True
    assert "bf16_full_eval=True, but this CPU has no bfloat16 instructions" in caplog.text
    caplog.clear()
    monkeypatch.setattr("s2s.arguments.checks.bf16_is_native", lambda *, on_cuda: True)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        make(bf16=True, bf16_full_eval=True)
    assert "bfloat16" not in caplog.text


def test_bf16_is_native_reads_the_cpu_flags(monkeypatch):
    from s2s.precision import bf16_is_native

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    for avx512_bf16, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert bf16_is_native(on_cuda=False) is expected


def test_defaults_construct_and_fill_derived_values():
    args = TrainingArguments()
    assert args.eval_strategy is IntervalStrategy.NO and args.evaluation_strategy == IntervalStrategy.NO
    assert args.run_name == args.output_dir
    assert args.logging_dir.startswith(args.output_dir)
    assert args.label_names == ["labels"]
    assert args.report_to == ["jsonl"]
    assert args.optim is OptimizerNames.ADAMW_TORCH_FUSED
    assert args.lr_scheduler_type is SchedulerType.LINEAR


# ------------------------------------------------------------------------------------------ aliases
@pytest.mark.parametrize("name", ["eval_strategy", "evaluation_strategy"])
def test_both_names_of_eval_strategy_set_both(name):
    args = make(**{name: "epoch"})
    assert args.eval_strategy == "epoch" and args.evaluation_strategy == "epoch"
    assert args.do_eval, "an evaluation strategy implies do_eval"
    args.eval_strategy = "no"
    assert args.evaluation_strategy == IntervalStrategy.NO == "no"
    args.evaluation_strategy = "steps"
    assert args.eval_strategy is IntervalStrategy.STEPS


def test_dataclasses_replace_changes_the_strategy_through_either_path():
    args = make(eval_strategy="steps", eval_steps=10)
    for new in ("epoch", "no"):
        changed = dataclasses.replace(args, eval_strategy=new)
        assert changed.eval_strategy == new and changed.evaluation_strategy == new
    assert TrainingArguments(**args.to_dict()).eval_strategy is IntervalStrategy.STEPS
    with pytest.warns(FutureWarning):
        old = make(adafactor=True)
    assert dataclasses.replace(old, optim="sgd").optim is OptimizerNames.SGD


def test_contradicting_eval_strategy_names_are_refused():
    with pytest.raises(ValueError, match="evaluation_strategy"):
        make(eval_strategy="steps", evaluation_strategy="epoch")


def test_adafactor_flag_maps_to_optim_with_warning():
    with pytest.warns(FutureWarning, match="optim='adafactor'"):
        args = make(adafactor=True)
    assert args.optim is OptimizerNames.ADAFACTOR


def test_fp16_backend_maps_to_half_precision_backend():
    with pytest.warns(FutureWarning, match="half_precision_backend"):
        args = make(fp16_backend="cpu_amp", use_cpu=True)
    assert args.half_precision_backend == "cpu_amp"


def test_no_cuda_maps_to_use_cpu():
    with pytest.warns(FutureWarning, match="use_cpu"):
        args = make(no_cuda=True)
    assert args.use_cpu and args.device == torch.device("cpu") and args.n_gpu == 0


def test_torch_compile_backend_turns_compile_on():
    assert make(torch_compile_backend="inductor").torch_compile


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"eval_strategy": "sometimes"},
            r"'sometimes' is not a valid IntervalStrategy; choose one of \['no'",
        ),
        ({"lr_scheduler_type": "cosine_annealing"}, "choose one of"),
        ({"optim": "lion"}, "adamw_torch"),
        ({"log_level": "verbose"}, "log_level"),
        ({"load_best_model_at_end": True}, "eval_strategy='steps' or 'epoch'"),
        (
            {"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "steps"},
            "save_strategy == eval_strategy",
        ),
        (
            {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 30, "save_steps": 50},
            "multiple of eval_steps",
        ),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be >= 0"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio must be in \[0, 1\]"),
        ({"label_smoothing_factor": 1.0}, r"label_smoothing_factor must be in \[0, 1\)"),
        ({"max_steps": 0}, "max_steps"),
        ({"num_train_epochs": 0}, "num_train_epochs must be > 0"),
        ({"adam_beta2": 1.0}, "adam_beta2"),
        ({"bf16": True, "fp16": True}, "choose one"),
        ({"bf16": "sometimes"}, "bf16='sometimes' is not one of True, False, 'auto'"),
        ({"save_steps": 0}, "save_steps > 0"),
        ({"lr_scheduler_type": "constant", "warmup_ratio": 0.1}, "use 'constant_with_warmup'"),
        ({"logging_steps": 0}, "logging_steps > 0"),
        ({"eval_strategy": "steps", "eval_steps": -5}, "eval_steps must be > 0"),
        ({"dataloader_persistent_workers": True}, "dataloader_num_workers > 0"),
        ({"dataloader_prefetch_factor": 2}, "dataloader_num_workers > 0"),
        ({"max_tokens_per_batch": 0}, "max_tokens_per_batch must be >= 1"),
        ({"max_tokens_per_batch": 4096, "group_by_length": True}, "remove group_by_length"),
        ({"fsdp": "full_shard shard_grad_op"}, "exactly one of"),
        ({"fsdp": "zero3"}, "fsdp='zero3'"),
        ({"fsdp_min_num_params": 1000}, "only apply with fsdp"),
        ({"report_to": ["none", "jsonl"]}, "'none' cannot be combined"),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "eval_strategy='steps' or 'epoch'"),
        (
            {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "epoch", "warmup_steps": 10},
            "has no warmup",
        ),
        (
            {"lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {"num_cycle": 2}},
            "did you mean 'num_cycles'",
        ),
        ({"lr_scheduler_kwargs": "{not json"}, "lr_scheduler_kwargs is not valid JSON"),
        ({"optim_args": "momentum0.9"}, "optim_args entry 'momentum0.9' is not key=value"),
        (
            {"optim": "sgd", "optim_args": "momentun=0.9"},
            r"optim_args \['momentun'\] are not arguments of SGD",
        ),
    ],
)
def test_validation_messages_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_eval_steps_default_to_logging_steps():
    args = make(eval_strategy="steps", logging_steps=25)
    assert args.eval_steps == 25


def test_best_model_defaults():
    args = make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=50, save_steps=100)
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False
    assert make(metric_for_best_model="bleu").greater_is_better is True
    assert make(metric_for_best_model="eval_loss").greater_is_better is False
    assert make(metric_for_best_model="bleu", greater_is_better=False).greater_is_better is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [("none", []), ([], []), ("jsonl", ["jsonl"]), (["jsonl", "jsonl"], ["jsonl"]), ("all", ["jsonl"])],
)
def test_report_to_forms(value, expected, monkeypatch):
    monkeypatch.setattr("s2s.arguments.normalise.is_importable", lambda name: False)
    assert make(report_to=value).report_to == expected


def test_report_to_all_includes_tensorboard_when_installed(monkeypatch):
    monkeypatch.setattr("s2s.arguments.normalise.is_importable", lambda name: name == "tensorboard")
    assert make(report_to="all").report_to == ["jsonl", "tensorboard"]


def test_report_to_all_means_every_installed_reporter(monkeypatch):
    monkeypatch.setattr("s2s.arguments.normalise.is_importable", lambda name: name in ("mlflow", "wandb"))
    assert make(report_to="all").report_to == ["jsonl", "mlflow", "wandb"]


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_report_to_a_tracker(monkeypatch, name):
    monkeypatch.setattr("s2s.arguments.normalise.is_importable", lambda module: module == name)
    assert make(report_to=["jsonl", name]).report_to == ["jsonl", name]
    monkeypatch.setattr("s2s.arguments.normalise.is_importable", lambda module: False)
    with pytest.raises(
        ValueError, match=rf"needs the {name} package \(pip install 's2s-toolkit\[{name}\]'\)"
    ):
        make(report_to=name)


def test_report_to_tensorboard_without_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr("s2s.arguments.normalise.is_importable", lambda name: False)
    with pytest.raises(ValueError, match="needs the tensorboard package"):
        make(report_to="tensorboard")


def test_string_lists_and_json_dicts_are_normalised():
    args = make(
        fsdp="full_shard auto_wrap",
        debug="underflow_overflow",
        lr_scheduler_type="cosine_with_restarts",
        lr_scheduler_kwargs='{"num_cycles": 3}',
    )
    assert args.fsdp == ["full_shard", "auto_wrap"]
    assert args.debug == ["underflow_overflow"]
    assert args.lr_scheduler_kwargs == {"num_cycles": 3}


def test_local_rank_comes_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("RANK", "7")
    monkeypatch.setenv("WORLD_SIZE", "8")
    args = make(use_cpu=True)
    assert (args.local_rank, args.local_process_index, args.process_index, args.world_size) == (3, 3, 7, 8)
    assert not args.should_log and not args.should_save
    assert make(use_cpu=True, save_on_each_node=True, local_rank=0).should_save


# ------------------------------------------------------------------------------------------ methods
def test_batch_sizes_on_cpu_are_per_device():
    args = make(use_cpu=True, per_device_train_batch_size=4, per_device_eval_batch_size=16)
    assert (args.train_batch_size, args.eval_batch_size) == (4, 16)


@pytest.mark.parametrize(
    ("kwargs", "total", "expected"),
    [({}, 100, 0), ({"warmup_ratio": 0.1}, 95, 10), ({"warmup_ratio": 0.1, "warmup_steps": 3}, 95, 3)],
)
def test_get_warmup_steps(kwargs, total, expected):
    assert make(**kwargs).get_warmup_steps(total) == expected


def test_process_log_level(monkeypatch):
    assert make(log_level="info").get_process_log_level() == logging.INFO
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    assert make(log_level="info", log_level_replica="error").get_process_log_level() == logging.ERROR
    logging.getLogger("s2s").setLevel(logging.DEBUG)
    try:
        monkeypatch.delenv("LOCAL_RANK")
        monkeypatch.delenv("RANK")
        assert make().get_process_log_level() == logging.DEBUG  # passive keeps the application's level
    finally:
        logging.getLogger("s2s").setLevel(logging.NOTSET)


def test_main_process_first_is_a_no_op_without_process_group():
    ran = []
    with make().main_process_first(desc="tokenise"):
        ran.append(True)
    assert ran == [True]


def test_to_dict_is_plain_json_and_round_trips():
    args = make(eval_strategy="epoch", lr_scheduler_type="cosine", optim="sgd", bf16=True)
    d = args.to_dict()
    assert d["eval_strategy"] == "epoch" and type(d["eval_strategy"]) is str
    assert d["evaluation_strategy"] == "epoch" and d["optim"] == "sgd"
    assert json.loads(args.to_json_string()) == d
    again = TrainingArguments(**d)
    assert again.to_dict() == d
    assert {f.name for f in dataclasses.fields(TrainingArguments)} == set(d)


@dataclasses.dataclass
class WithToken(TrainingArguments):
    api_token: str | None = None
    """A secret a user's subclass may add."""


def test_to_dict_redacts_tokens():
    # hub_token is refused (and never echoed: tests/s2s/test_training_args_refused.py); a subclass's token field
    # must still stay out of logged and saved arguments
    args = WithToken(output_dir="out", api_token="hf_secret")
    assert args.api_token == "hf_secret"
    assert "hf_secret" not in args.to_json_string() and "hf_secret" not in str(args)
    assert args.to_dict()["api_token"] == "<REDACTED>"
    assert WithToken(output_dir="out").to_dict()["api_token"] is None


def test_to_sanitized_dict_has_only_scalars():
    d = make(report_to="jsonl", per_device_train_batch_size=4).to_sanitized_dict()
    assert all(isinstance(v, bool | int | float | str) for v in d.values())
    assert d["train_batch_size"] == 4
    assert d["report_to"] == "['jsonl']" and d["data_seed"] == "None"


def test_every_argument_has_a_docstring():
    # (that every argument also has a reader is guarded by tests/s2s/test_arguments_are_read.py)
    from s2s.argparser import field_docs
    from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

    docs = field_docs(Seq2SeqTrainingArguments)
    undocumented = [f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if not docs.get(f.name)]
    assert not undocumented, f"fields without a docstring under them: {undocumented}"
