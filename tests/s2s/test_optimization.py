import math

import pytest
import torch
from torch import nn

from s2s.optimization import (
    SCHEDULER_KWARGS,
    Adafactor,
    create_optimizer,
    create_scheduler,
    get_decay_parameter_names,
    get_parameter_groups,
    get_scheduler,
    is_metric_scheduler,
    parse_optim_args,
)
from s2s.training_args import TrainingArguments


class T5LayerNorm(nn.Module):
    """A custom norm, recognised by its class name."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.proj = nn.Linear(8, 8)
        self.ln = nn.LayerNorm(8)
        self.rms = T5LayerNorm(8)
        self.gate = nn.Parameter(torch.zeros(8))  # 1-D, not in a norm module
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 10, bias=False)

    def forward(self, ids):
        return self.head(self.rms(self.ln(self.proj(self.embed(ids)) + self.gate)))


def args(**kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir="out", report_to="none", **kwargs)


# ------------------------------------------------------------------------------------------ weight decay
def test_decay_skips_biases_norms_and_vectors():
    assert sorted(get_decay_parameter_names(Tiny())) == ["embed.weight", "head.weight", "proj.weight"]


def test_parameter_groups_cover_trainable_parameters_once():
    model = Tiny()
    groups = get_parameter_groups(model, 0.01)
    assert [(g["name"], g["weight_decay"]) for g in groups] == [("decay", 0.01), ("no_decay", 0.0)]
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)


def test_no_decay_group_really_gets_no_decay():
    model = Tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = create_optimizer(model, args(optim="adamw_torch", weight_decay=0.5, learning_rate=0.1))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # only decay can move a parameter
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"embed.weight", "head.weight", "proj.weight"}


def test_no_trainable_parameters_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        get_parameter_groups(model, 0.0)


# ------------------------------------------------------------------------------------------ optimizers
@pytest.mark.parametrize(
    ("optim", "cls"),
    [
        ("adamw_torch", torch.optim.AdamW),
        ("adamw_hf", torch.optim.AdamW),
        ("adamw_torch_fused", torch.optim.AdamW),
        ("adafactor", Adafactor),
        ("sgd", torch.optim.SGD),
        ("adagrad", torch.optim.Adagrad),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_every_optimizer_name_builds_and_steps(optim, cls):
    model = Tiny()
    optimizer = create_optimizer(model, args(optim=optim, learning_rate=0.01, weight_decay=0.01))
    assert type(optimizer) is cls
    assert optimizer.defaults["lr"] == 0.01
    loss = model(torch.tensor([[1, 2, 3]])).logsumexp(-1).mean()
    loss.backward()
    before = model.proj.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.proj.weight)


def test_adam_hyper_parameters_and_fused_flag():
    a = args(adam_beta1=0.8, adam_beta2=0.98, adam_epsilon=1e-6, optim="adamw_torch_fused")
    optimizer = create_optimizer(Tiny(), a)
    assert optimizer.defaults["betas"] == (0.8, 0.98) and optimizer.defaults["eps"] == 1e-6
    assert optimizer.defaults["fused"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("momentum=0.9,nesterov=True", {"momentum": 0.9, "nesterov": True}),
        ("betas=(0.9,0.98), eps=1e-9", {"betas": (0.9, 0.98), "eps": 1e-9}),
        ("foreach=None,name=fast", {"foreach": None, "name": "fast"}),
        ("", {}),
        (None, {}),
    ],
)
def test_parse_optim_args(text, expected):
    assert parse_optim_args(text) == expected


def test_optim_args_reach_the_optimizer():
    optimizer = create_optimizer(Tiny(), args(optim="sgd", optim_args="momentum=0.9,nesterov=True"))
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"] is True
    optimizer = create_optimizer(Tiny(), args(optim="adafactor", optim_args="beta1=0.9,scale_parameter=True"))
    assert optimizer.defaults["beta1"] == 0.9 and optimizer.defaults["scale_parameter"] is True


def test_unknown_optim_args_name_the_accepted_ones():
    a = args(optim="sgd")
    a.optim_args = "momentun=0.9"  # set after construction, which already checks it
    with pytest.raises(ValueError, match=r"optim_args \['momentun'\] are not arguments of SGD.*'momentum'"):
        create_optimizer(Tiny(), a)


# ------------------------------------------------------------------------------------------ Adafactor
def test_adafactor_reduces_a_simple_loss():
    torch.manual_seed(0)
    x, w_true = torch.randn(64, 8), torch.randn(8, 4)
    y = x @ w_true
    model = nn.Linear(8, 4)
    optimizer = Adafactor(model.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    state = optimizer.state[model.weight]
    assert state["exp_avg_sq_row"].shape == (4,) and state["exp_avg_sq_col"].shape == (8,)  # factored
    assert "exp_avg_sq" in optimizer.state[model.bias] and "exp_avg" not in state


@pytest.mark.parametrize("options", [{}, {"beta1": 0.9, "weight_decay": 0.1}, {"scale_parameter": True}])
def test_adafactor_matches_hugging_face(options):
    hf = pytest.importorskip("transformers.optimization")
    torch.manual_seed(0)
    ours, theirs = nn.Linear(6, 5), nn.Linear(6, 5)
    theirs.load_state_dict(ours.state_dict())
    opt_ours = Adafactor(ours.parameters(), lr=0.01, **options)
    hf_options = {"scale_parameter": False, "relative_step": False, "warmup_init": False, **options}
    opt_theirs = hf.Adafactor(theirs.parameters(), lr=0.01, **hf_options)
    x = torch.randn(16, 6)
    for _ in range(5):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------ schedules
def lrs(name: str, steps: int, **kwargs) -> list[float]:
    """Learning rate (peak 1.0) before step 0, 1, ..., steps."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(name, optimizer, **kwargs)
    out = []
    for _ in range(steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


HAND_COMPUTED = [
    ("linear", {"num_warmup_steps": 2, "num_training_steps": 10}, {0: 0, 1: 0.5, 2: 1, 3: 7 / 8, 6: 0.5, 10: 0}),
    ("cosine", {"num_warmup_steps": 2, "num_training_steps": 10}, {1: 0.5, 2: 1, 4: 0.5 + 0.5 * math.cos(math.pi / 4), 6: 0.5, 10: 0}),
    (
        "cosine_with_restarts",
        {"num_warmup_steps": 0, "num_training_steps": 8, "scheduler_specific_kwargs": {"num_cycles": 2}},
        {0: 1, 2: 0.5, 4: 1, 6: 0.5, 8: 0},
    ),
    (
        "polynomial",
        {"num_warmup_steps": 0, "num_training_steps": 4, "scheduler_specific_kwargs": {"lr_end": 0.1, "power": 2}},
        {0: 1, 2: 0.9 * 0.25 + 0.1, 4: 0.1, 6: 0.1},
    ),
    ("constant", {}, {0: 1, 5: 1}),
    ("constant_with_warmup", {"num_warmup_steps": 4}, {0: 0, 1: 0.25, 3: 0.75, 4: 1, 9: 1}),
    ("inverse_sqrt", {"num_warmup_steps": 4}, {2: 0.5, 4: 1, 16: 0.5}),
    ("inverse_sqrt", {"scheduler_specific_kwargs": {"timescale": 10}}, {0: 1, 30: 0.5}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kwargs", "expected"), HAND_COMPUTED, ids=[h[0] for h in HAND_COMPUTED])
def test_schedule_shapes(name, kwargs, expected):
    got = lrs(name, max(expected), **kwargs)
    assert {step: pytest.approx(got[step], abs=1e-9) for step in expected} == expected


@pytest.mark.parametrize("name", [n for n in SCHEDULER_KWARGS if n != "reduce_lr_on_plateau"])
def test_schedules_match_hugging_face(name):
    hf = pytest.importorskip("transformers.optimization")
    warmup = 0 if name == "constant" else 3  # HF ignores warmup for "constant"; s2s refuses it
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = hf.get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=12)
    expected = []
    for _ in range(15):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        ref.step()
    assert lrs(name, 14, num_warmup_steps=warmup, num_training_steps=12) == pytest.approx(expected, abs=1e-12)


def test_warmup_by_ratio_and_steps_through_args():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = create_scheduler(optimizer, args(learning_rate=2.0, warmup_ratio=0.1), num_training_steps=100)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)  # halfway through 10 warmup steps
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    a = args(lr_scheduler_type="constant_with_warmup", warmup_ratio=0.5, warmup_steps=4)
    scheduler = create_scheduler(optimizer, a, num_training_steps=100)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.0)  # warmup_steps wins over the ratio


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("linear", {"num_training_steps": None}, "needs num_training_steps > 0"),
        ("constant", {"num_warmup_steps": 3}, "use 'constant_with_warmup'"),
        ("reduce_lr_on_plateau", {"num_warmup_steps": 3}, "has no warmup"),
        (
            "cosine",
            {"num_training_steps": 5, "scheduler_specific_kwargs": {"cycles": 2}},
            "did you mean 'num_cycles'",
        ),
        (
            "polynomial",
            {"num_training_steps": 5, "scheduler_specific_kwargs": {"lr_end": 2.0}},
            "must be smaller",
        ),
        ("exponential", {}, "is not one of"),
    ],
)
def test_schedule_errors(name, kwargs, message):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=message):
        get_scheduler(name, optimizer, **kwargs)


def test_reduce_on_plateau_mode_follows_greater_is_better():
    def build(**kw):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        a = args(lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="epoch", **kw)
        return optimizer, create_scheduler(optimizer, a, num_training_steps=10)

    optimizer, scheduler = build(
        metric_for_best_model="bleu", lr_scheduler_kwargs={"patience": 0, "factor": 0.5}
    )
    assert is_metric_scheduler(scheduler) and scheduler.mode == "max"
    scheduler.step(30.0)
    scheduler.step(31.0)  # BLEU went up: no reduction
    assert optimizer.param_groups[0]["lr"] == 1.0
    scheduler.step(29.0)
    assert optimizer.param_groups[0]["lr"] == 0.5
    _, scheduler = build()
    assert scheduler.mode == "min"  # metric_for_best_model defaults to "loss"
    assert not is_metric_scheduler(
        get_scheduler("constant", torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1))
    )


ALL_SCHEDULES = [
    ("linear", {}),
    ("cosine", {"num_cycles": 0.3}),
    ("cosine_with_restarts", {"num_cycles": 2}),
    ("polynomial", {"power": 2.0}),
    ("constant_with_warmup", {}),
    ("inverse_sqrt", {"timescale": 7}),
    ("reduce_lr_on_plateau", {"patience": 0}),
]


@pytest.mark.parametrize(("name", "kwargs"), ALL_SCHEDULES, ids=[s[0] for s in ALL_SCHEDULES])
def test_scheduler_state_resumes_exactly_with_weights_only(tmp_path, name, kwargs):
    plateau = name == "reduce_lr_on_plateau"
    warmup = 0 if plateau else 3

    def build():
        model = Tiny()
        optimizer = create_optimizer(model, args(optim="adafactor", learning_rate=0.1))
        return (
            model,
            optimizer,
            get_scheduler(
                name,
                optimizer,
                num_warmup_steps=warmup,
                num_training_steps=12,
                scheduler_specific_kwargs=kwargs,
            ),
        )

    def advance(model, optimizer, scheduler, steps, start):
        out = []
        for i in range(start, start + steps):
            optimizer.zero_grad()
            model(torch.tensor([[1, 2, 3]])).logsumexp(-1).mean().backward()
            optimizer.step()
            scheduler.step(float(i % 3)) if plateau else scheduler.step()
            out.append([g["lr"] for g in optimizer.param_groups])
        return out

    torch.manual_seed(0)
    straight = build()
    expected = advance(*straight, 8, 0)

    torch.manual_seed(0)
    first = build()
    advance(*first, 4, 0)
    torch.save(
        {"optimizer": first[1].state_dict(), "scheduler": first[2].state_dict()}, tmp_path / "state.pt"
    )
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # no pickled functions or classes
    resumed = build()
    resumed[0].load_state_dict(first[0].state_dict())
    resumed[1].load_state_dict(state["optimizer"])
    resumed[2].load_state_dict(state["scheduler"])
    assert advance(*resumed, 4, 4) == expected[4:]
    for a, b in zip(straight[0].parameters(), resumed[0].parameters()):
        torch.testing.assert_close(a, b)
