"""The key equivalences on every device present: CPU always, CUDA when there is one (marked ``cuda``, run by
``pytest -m cuda`` and by ``python -m bench.gpu``; skipped where no GPU is visible).

- k micro-batches of b examples train like one batch of k * b;
- a resumed run ends exactly like the uninterrupted one (dropout on: the device's RNG state is restored);
- a wide beam finds what brute force finds, with the beam bookkeeping on the device;
- cached decoding equals decoding by full forward passes;
and on CUDA only: logits and gradients match the CPU's within fp32 / bf16 tolerances, attention runs in the
fused SDPA kernels, neither training nor decoding waits on the device per update or step, fp16 trains with
its scaler, non-finite updates are skipped on the device, the GPU memory peak is reported, the model trains
under torch.compile, and DDP on 2 GPUs (when there are 2) trains like one process.

Nothing here needs ``datasets`` or ``rouge_score``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from s2s.generation import generate
from s2s.trainer import Trainer
from tests.s2s.generation.test_generation import (
    PAD,
    SOURCES,
    brute_force,
    config,
    generated,
    random_table_model,
)
from tests.s2s.models.test_model import check_cached_equals_uncached, source_batch, tiny_model
from tests.s2s.test_trainer import NaNOnPoison, poisoned_examples
from tests.s2s.test_trainer_accumulation import train_params
from tests.s2s.test_trainer_resume import StopAt, losses, make_trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, params_of, toy_args

CUDA = torch.cuda.is_available()
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="no CUDA device visible")]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]
# Summation order differs between devices and kernels; fp32 agreement is to a few ulps of the values.
TOLERANCE = {"cpu": {"atol": 1e-5, "rtol": 0}, "cuda": {"atol": 1e-4, "rtol": 1e-4}}


def on(device: str) -> dict:
    return {"use_cpu": device == "cpu"}


# --------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [{}, {"label_smoothing_factor": 0.1}], ids=["model-loss", "smoothing"])
def test_accumulation_equals_one_big_batch(tmp_path, device, case):
    whole, whole_losses = train_params(tmp_path, batch=8, accumulation=1, **on(device), **case)
    split, split_losses = train_params(tmp_path, batch=2, accumulation=4, **on(device), **case)
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], **TOLERANCE[device])
    assert split_losses == pytest.approx(whole_losses, abs=TOLERANCE[device]["atol"])


@pytest.mark.parametrize("device", DEVICES)
def test_resume_equals_uninterrupted(tmp_path, device):
    straight, straight_batches = make_trainer(tmp_path / "straight", "token_budget", **on(device))
    straight.train()
    stopped, first_batches = make_trainer(
        tmp_path / "run", "token_budget", callbacks=[StopAt(3)], **on(device)
    )
    stopped.train()
    resumed, later_batches = make_trainer(tmp_path / "run", "token_budget", **on(device))
    resumed.train(resume_from_checkpoint=tmp_path / "run" / "checkpoint-3")
    assert first_batches + later_batches == straight_batches
    (steps, resumed_losses), (straight_steps, straight_losses) = zip(*losses(resumed)), zip(*losses(straight))
    assert steps == straight_steps and resumed_losses == pytest.approx(straight_losses, abs=1e-6)
    final, expected = params_of(resumed.model), params_of(straight.model)
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------- decoding
class _OnDevice:
    """A table model (it computes on the host) behind the decoding protocol on ``device``: the engine's
    tensors (ids, scores, beams, finished hypotheses) all live on the device."""

    def __init__(self, model, device: str) -> None:
        self.model, self.device = model, torch.device(device)

    def encode(self, input_ids, attention_mask):
        return self.model.encode(input_ids.cpu(), attention_mask.cpu())

    def start_decoding(self, state, attention_mask, **kwargs):
        return _DeviceCache(self.model.start_decoding(state, attention_mask.cpu(), **kwargs))

    def decode_step(self, tokens, cache):
        return self.model.decode_step(tokens.cpu(), cache.inner).to(self.device)


class _DeviceCache:
    def __init__(self, inner) -> None:
        self.inner = inner

    def reorder(self, rows) -> None:
        self.inner.reorder(rows.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_wide_beam_equals_brute_force(device):
    model = random_table_model()
    width = max(map(len, SOURCES))
    ids = torch.tensor([s + [PAD] * (width - len(s)) for s in SOURCES], device=device)
    options = dict(num_beams=64, num_return_sequences=3, max_new_tokens=4, length_penalty=1.0)
    out = generate(
        _OnDevice(model, device),
        ids,
        (ids != PAD).long(),
        generation_config=config(return_dict_in_generate=True, output_scores=True, **options),
    )
    assert out.sequences.device.type == device
    for i, source in enumerate(SOURCES):
        expected = brute_force(model, tuple(source), max_new=4, length_penalty=1.0, top=3)
        for j, (score, seq) in enumerate(expected):
            assert generated(out.sequences[i * 3 + j].cpu()) == list(seq)
            assert float(out.sequences_scores[i * 3 + j]) == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_decoding_equals_uncached(device, num_beams):
    check_cached_equals_uncached(device=device, num_beams=num_beams, tolerance=1e-4)


# --------------------------------------------------------------------------------------------- CUDA only
def _teacher_forced(model, device: str, *, bf16: bool = False):
    """Logits and parameter gradients of one training pass (summed loss) on ``device``."""
    model = model.to(device).train()
    model.zero_grad(set_to_none=True)
    ids, mask = (t.to(device) for t in source_batch())
    labels = torch.tensor([[5, 6, 7, 3], [8, 9, 3, -100], [10, 3, -100, -100]], device=device)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, mask, labels=labels)
    (out.loss * 7).backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()}
    return out.logits.detach().float().cpu(), grads


def _relative_errors(grads: dict, reference: dict) -> dict[str, float]:
    return {n: float((grads[n] - r).norm() / r.norm()) for n, r in reference.items() if r.norm() > 0}


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
def test_cuda_logits_and_gradients_match_the_cpu():
    """fp32 on CUDA gives the CPU's logits and gradients up to summation order. bf16 autocast on CUDA is as
    close to fp32 as bf16 autocast on the CPU is (8-bit mantissas in every matmul input make some gradients
    differ by several percent either way): within 3x the CPU's bf16 error, plus a margin."""
    logits, grads = _teacher_forced(tiny_model(seed=2), "cpu")
    cpu_bf16_logits, cpu_bf16_grads = _teacher_forced(tiny_model(seed=2), "cpu", bf16=True)
    cuda_logits, cuda_grads = _teacher_forced(tiny_model(seed=2), "cuda")
    cuda_bf16_logits, cuda_bf16_grads = _teacher_forced(tiny_model(seed=2), "cuda", bf16=True)

    torch.testing.assert_close(cuda_logits, logits, atol=1e-4, rtol=1e-4)
    assert max(_relative_errors(cuda_grads, grads).values()) < 1e-4

    bf16_error = float((cpu_bf16_logits - logits).abs().max())
    assert float((cuda_bf16_logits - logits).abs().max()) <= 3 * bf16_error + 1e-2
    cpu_errors = _relative_errors(cpu_bf16_grads, grads)
    for name, error in _relative_errors(cuda_bf16_grads, grads).items():
        assert error <= 3 * cpu_errors[name] + 1e-2, (
            f"{name}: {error:.4f} on CUDA, {cpu_errors[name]:.4f} on CPU"
        )


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
def test_cuda_greedy_tokens_match_the_cpu(monkeypatch):
    monkeypatch.setenv("S2S_DECODE_KERNEL", "0")  # the CPU side through torch: no C++ build on a GPU machine
    ids, mask = source_batch()
    cpu = tiny_model(seed=5).generate(ids, mask, max_new_tokens=8)
    cuda = tiny_model(seed=5).cuda().generate(ids.cuda(), mask.cuda(), max_new_tokens=8)
    assert torch.equal(cuda.cpu(), cpu)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_attention_runs_in_fused_kernels_only(precision):
    """Training and decoding with SDPA restricted to its fused kernels (flash, memory-efficient, cuDNN): an
    attention call that would need the unfused math fallback raises instead."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    model = tiny_model(seed=1, d_model=64, num_heads=2).cuda()  # head size 32
    ids, mask = (t.cuda() for t in source_batch())
    labels = torch.tensor([[5, 6, 7, 3], [8, 9, 3, -100], [10, 3, -100, -100]], device="cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    with sdpa_kernel(fused), autocast:
        model.train()
        model(ids, mask, labels=labels).loss.backward()
        model.eval()
        for beams in (1, 3):
            model.generate(ids, mask, num_beams=beams, max_new_tokens=6)


def _count_syncs(run) -> int:
    """Synchronizing CUDA calls (host reads, blocking copies) made by ``run()``, counted with torch's sync
    debug mode, which warns at each."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
def test_training_waits_on_the_gpu_only_at_logging_steps(tmp_path):
    """The number of synchronizing calls of a training run does not grow with its updates (logging only at
    the end; fused AdamW, clipping, pinned batches copied without blocking)."""

    def train(steps: int) -> None:
        args = toy_args(
            tmp_path / f"s{steps}",
            use_cpu=False,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            max_steps=steps,
            logging_steps=1000,
            optim="adamw_torch_fused",
            learning_rate=0.01,
            max_grad_norm=1.0,
        )
        trainer = Trainer(
            model=ToySeq2Seq(), args=args, data_collator=ToyCollator(), train_dataset=make_examples(64)
        )
        trainer.train()

    train(2)  # warm-up: CUDA context, kernels, allocator
    short, long = _count_syncs(lambda: train(3)), _count_syncs(lambda: train(9))
    assert long == short, f"{short} synchronizing calls for 3 updates, {long} for 9"


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
@pytest.mark.parametrize("num_beams", [1, 4])
def test_decoding_waits_on_the_gpu_only_per_call(num_beams):
    model = tiny_model(seed=3).cuda()
    ids, mask = (t.cuda() for t in source_batch())

    def decode(new_tokens: int):
        return lambda: model.generate(
            ids, mask, num_beams=num_beams, max_new_tokens=new_tokens, min_new_tokens=new_tokens
        )

    decode(3)()  # warm-up
    short, long = _count_syncs(decode(4)), _count_syncs(decode(16))
    assert long == short, f"{short} synchronizing calls for 4 steps, {long} for 16"


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_nonfinite_update_is_skipped_on_the_gpu(tmp_path, precision):
    """One poisoned batch (NaN loss): its update is skipped by the fused optimizer (bf16) or the scaler
    (fp16), the others train, and the weights stay finite."""
    args = toy_args(
        tmp_path,
        use_cpu=False,
        per_device_train_batch_size=1,
        max_steps=4,
        optim="adamw_torch_fused",
        learning_rate=0.01,
        data_seed=0,
        skip_memory_metrics=False,
        **{precision: True},
    )
    trainer = Trainer(
        model=NaNOnPoison(), args=args, data_collator=ToyCollator(), train_dataset=poisoned_examples(4, {1})
    )
    output = trainer.train()
    assert trainer.state.nonfinite_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert output.metrics["train_mem_gpu_peak"] > 0
    if precision == "fp16":
        assert trainer.scaler is not None and trainer.scaler.get_scale() < 2.0**16  # lowered at the NaN


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
def test_batches_are_pinned_for_cuda(tmp_path):
    from s2s.dataloaders import loader_options

    assert loader_options(toy_args(tmp_path, use_cpu=False))["pin_memory"]
    assert not loader_options(toy_args(tmp_path, use_cpu=True))["pin_memory"]


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device visible")
def test_compiled_transformer_trains_on_cuda(tmp_path):
    """torch_compile=True with the default (inductor) backend: a few bf16 steps of the Transformer."""
    examples = [{"input_ids": row.tolist(), "labels": [5, 6, 7, 3]} for row in torch.randint(4, 24, (16, 6))]
    args = toy_args(
        tmp_path,
        use_cpu=False,
        bf16=True,
        torch_compile=True,
        max_steps=3,
        optim="adamw_torch_fused",
        learning_rate=1e-3,
    )

    def collate(features):
        batch = {k: torch.tensor([f[k] for f in features]) for k in ("input_ids", "labels")}
        return {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}

    model = tiny_model(dropout=0.1)
    output = Trainer(model=model, args=args, data_collator=collate, train_dataset=examples).train()
    assert output.global_step == 3 and torch.isfinite(torch.tensor(output.training_loss))


# --------------------------------------------------------------------------------------------- DDP
def _ddp_scenario(rank: int, out: Path) -> None:
    """2 processes (nccl) x batch 2 x accumulation 2, three updates, as tests/s2s/test_distributed.py on CPU."""
    from tests.s2s.test_distributed import collator, examples, make_args, tiny_model

    trainer = Trainer(
        model=tiny_model(),
        args=make_args(out, use_cpu=False, gradient_accumulation_steps=2),
        data_collator=collator(),
        train_dataset=examples(24),
    )
    trainer.train()
    assert type(trainer.model_wrapped).__name__ == "DistributedDataParallel"
    if rank == 0:
        torch.save({k: v.cpu() for k, v in trainer.model.state_dict().items()}, out / "ddp.pt")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_ddp_on_two_gpus_equals_one_process_with_the_doubled_batch(tmp_path):
    from tests.s2s.test_distributed import collator, examples, make_args, run_world, tiny_model

    run_world(_ddp_scenario, tmp_path)
    single = Trainer(
        model=tiny_model(),
        args=make_args(
            tmp_path / "single", use_cpu=False, per_device_train_batch_size=4, gradient_accumulation_steps=2
        ),
        data_collator=collator(),
        train_dataset=examples(24),
    )
    single.train()
    ddp = torch.load(tmp_path / "ddp.pt")
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[name], value.cpu(), atol=1e-5, rtol=1e-4)
