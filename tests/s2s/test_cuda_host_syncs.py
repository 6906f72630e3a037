"""No host read of device values per training update or decoding step, proven on CPU.

On CUDA, reading a device tensor on the host (``.item()``, ``float(t)``, ``bool(t)``/``if t:``, ``.tolist()``,
``.cpu()``, ``.numpy()``) waits until the GPU has run everything queued so far: the GPU then idles while
Python prepares the next step. CPU has no such cost, so nothing on CPU shows these reads; ``HostReads``
makes them visible. It marks "device" tensors (the model's parameters and buffers, and the batch tensors
after they cross ``.to(device)``, simulated by a copy) and everything computed from them, through a
``TorchDispatchMode`` that sees every tensor operation (forward, backward, optimizer), and counts the host
reads of marked tensors. Host-side work on the batch before it is moved (counting target tokens for the
loss normalisation, padding statistics) is not counted: on CUDA it touches pinned host memory only.

The tests assert that the count does not grow with the number of updates (or decoding steps).
"""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from s2s.callbacks import TrainerState
from s2s.generation import stopping
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.optimizer_step import UpdateLedger, clip_and_step_on_device
from s2s.trainer import Trainer
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, toy_args

_SCALAR_READ = torch.ops.aten._local_scalar_dense.default  # behind .item(), float(), int(), bool()


class HostReads(TorchDispatchMode):
    """Counts host reads of device tensors; ``where`` maps each reading line of s2s code to its count."""

    def __init__(self, roots=(), *, count_all: bool = False) -> None:
        super().__init__()
        self.count_all = count_all
        self._device = WeakIdKeyDictionary()
        for tensor in roots:
            self.mark(tensor)
        self.where: Counter[str] = Counter()
        self._patches: list[tuple[str, object]] = []

    @property
    def total(self) -> int:
        return sum(self.where.values())

    def mark(self, tensor: torch.Tensor) -> None:
        self._device[tensor] = True
        base = getattr(tensor, "_base", None)
        if base is not None:  # an in-place write through a view changes its base too
            self._device[base] = True

    def is_device(self, tensor: torch.Tensor) -> bool:
        return self.count_all or tensor in self._device

    def record(self) -> None:
        frames = [f for f in traceback.extract_stack() if "/s2s/" in f.filename]
        self.where[f"{frames[-1].filename.split('/s2s/')[-1]}:{frames[-1].lineno}" if frames else "?"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        from_device = any(self.is_device(t) for t in inputs)
        if func is _SCALAR_READ and from_device:
            self.record()
        out = func(*args, **kwargs)
        if from_device:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.mark(t)
        return out

    # Reads that do not dispatch on a CPU tensor, and the simulated host-to-device copy.
    def __enter__(self):
        counter = self

        def reading(name):
            original = getattr(torch.Tensor, name)

            def read(self, *args, **kwargs):
                if counter.is_device(self):
                    counter.record()
                return original(self, *args, **kwargs)

            return read

        original_to = torch.Tensor.to

        def to(self, *args, **kwargs):
            out = original_to(self, *args, **kwargs)
            device = torch._C._nn._parse_to(*args, **kwargs)[0]
            if device is not None and out is self and not counter.is_device(self):
                out = self.clone()  # crossing to the device: a new tensor, as a real copy would be
                counter.mark(out)
            return out

        for name in ("tolist", "numpy", "cpu"):
            self._patches.append((name, getattr(torch.Tensor, name)))
            setattr(torch.Tensor, name, reading(name))
        self._patches.append(("to", original_to))
        torch.Tensor.to = to
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in reversed(self._patches):
            setattr(torch.Tensor, name, original)
        self._patches.clear()
        return super().__exit__(*exc)


def test_the_counter_sees_the_reads_it_is_for():
    weight = torch.ones(3, requires_grad=True)
    host = torch.ones(3)
    with HostReads([weight]) as reads:
        loss = (weight * 2).sum()
        _ = float(loss), bool(loss > 0), loss.tolist(), loss.detach().cpu(), loss.item()
        _ = int(host.sum()), host.tolist()  # host data: not a device read
        moved = host.to("cpu")  # the simulated copy to the device makes it device data
        _ = moved.sum().item()
        loss.backward()
        _ = float(weight.grad.norm())  # backward's results are device data too
    assert reads.total == 7


# ----------------------------------------------------------------------------------------------- training
def _train(tmp_path, steps: int, **overrides) -> HostReads:
    args = toy_args(
        tmp_path / f"steps{steps}",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=steps,
        logging_steps=1000,  # no log inside the run: only the end of training may read the device
        optim="adamw_torch_fused",
        learning_rate=0.01,
        max_grad_norm=1.0,
        **overrides,
    )
    model = ToySeq2Seq()
    trainer = Trainer(model=model, args=args, data_collator=ToyCollator(), train_dataset=make_examples(64))
    with HostReads([*model.parameters(), *model.buffers()]) as reads:
        trainer.train()
    assert trainer.state.global_step == steps
    return reads


def test_training_reads_the_device_only_at_logging_steps(tmp_path):
    short, long = _train(tmp_path, 3), _train(tmp_path, 9)
    assert long.total == short.total, f"host reads grow with the updates: {long.where} vs {short.where}"


def test_the_fused_update_and_its_books_read_nothing(tmp_path):
    """clip_and_step_on_device with a fused optimizer, and UpdateLedger.record, make no host read at all,
    also when the update is skipped; only settling reads (once)."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    ledger = UpdateLedger(max_consecutive_nonfinite_steps=5, logging_nan_inf_filter=True, settle_every=100)
    state = TrainerState()
    with HostReads([*model.parameters()]) as reads:
        for loss_scale in (1.0, float("nan"), 1.0):
            loss = model(torch.ones(2, 4)).sum() * loss_scale
            loss.backward()
            outcome = clip_and_step_on_device(model, optimizer, loss_sum=loss.detach(), max_grad_norm=1.0)
            ledger.record(state, outcome, units=3)
            model.zero_grad(set_to_none=True)
    assert reads.total == 0, reads.where
    with HostReads(count_all=True) as reads:
        ledger.settle(state)
    assert reads.total == 1
    assert state.nonfinite_steps == 1 and state.loss_accumulators["total_units"] == 6


# ----------------------------------------------------------------------------------------------- decoding
def _tiny_model() -> TransformerForConditionalGeneration:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=40, d_model=32, encoder_layers=1, decoder_layers=2, num_heads=2, ffn_dim=64, dropout=0.0
    )
    return TransformerForConditionalGeneration(config).eval()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoding_reads_the_device_only_per_call(monkeypatch, num_beams):
    """With CUDA's rules (no per-step read, see s2s.generation.stopping) the number of host reads of one
    generate call does not depend on the number of steps."""
    monkeypatch.setattr(stopping, "reads_stall", lambda device: True)
    monkeypatch.setenv("S2S_DECODE_KERNEL", "0")  # the CPU kernel is not what runs on CUDA
    model = _tiny_model()
    ids = torch.randint(4, 40, (3, 6))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    counts = {}
    for new_tokens in (4, 12):
        with HostReads(count_all=True) as reads:
            model.generate(
                ids, mask, num_beams=num_beams, max_new_tokens=new_tokens, min_new_tokens=new_tokens
            )
        counts[new_tokens] = reads
    assert counts[12].total == counts[4].total, f"{counts[4].where} vs {counts[12].where}"
