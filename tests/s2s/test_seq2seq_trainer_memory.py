"""compute_metrics with preprocess_logits_for_metrics (predict_with_generate=False): the argmax runs per batch,
so evaluating 2,000 examples with a 32k vocabulary keeps memory flat instead of holding ~1 GB of logits.

Measured in a fresh process (its peak RSS is not polluted by other tests): the growth of the peak RSS over
the evaluation must stay far below the size the full logits would take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("s2s.models", reason="needs s2s.models (the project's Transformer)")

from tests.paths import REPO

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from s2s.data_collator import DataCollatorForSeq2Seq
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration
    from s2s.seq2seq_trainer import Seq2SeqTrainer
    from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

    VOCAB, N, LENGTH, BATCH = 32000, 2000, 4, 50

    class Pad:
        pad_token_id = 0

    def peak_bytes():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(4, VOCAB, (N, LENGTH), generator=g).tolist()]
    torch.manual_seed(0)
    config = TransformerConfig.preset(
        "tiny", vocab_size=VOCAB, d_model=16, ffn_dim=32, num_heads=2, encoder_layers=1, decoder_layers=1
    )
    model = TransformerForConditionalGeneration(config)
    batches = []

    def argmax(logits, labels):
        if isinstance(logits, tuple):  # (logits, encoder_last_hidden_state), as Hugging Face models give
            logits = logits[0]
        batches.append(tuple(logits.shape))
        return logits.argmax(-1)

    def compute_metrics(eval_pred):
        preds, labels = eval_pred
        return {"rows": len(preds), "accuracy": float((preds == labels).mean()), "pred_bytes": preds.nbytes}

    args = Seq2SeqTrainingArguments(
        output_dir=sys.argv[1], report_to="none", disable_tqdm=True, per_device_eval_batch_size=BATCH,
        predict_with_generate=False,
    )
    trainer = Seq2SeqTrainer(
        model=model, args=args, data_collator=DataCollatorForSeq2Seq(Pad(), model=model),
        compute_metrics=compute_metrics, preprocess_logits_for_metrics=argmax,
    )
    trainer.evaluate(rows[: 2 * BATCH])  # warm-up: allocator pools, lazy imports
    before = peak_bytes()
    metrics = trainer.evaluate(rows)
    print(json.dumps({
        "growth": peak_bytes() - before,
        "logits_bytes": N * LENGTH * VOCAB * 4,
        "batch_shapes": sorted(set(batches)),
        "metrics": metrics,
    }))
    """
)


def test_argmax_per_batch_keeps_memory_flat_with_a_32k_vocabulary(tmp_path):
    # glibc raises its mmap threshold after the first large free, then serves 25 MB logits from the heap,
    # whose RSS can ratchet up with fragmentation even though every batch's tensors are freed (checked: with
    # gc disabled, no tensor sits in a reference cycle). A fixed threshold keeps large blocks mmapped, so the
    # RSS measures what the evaluation holds, not the heap's policy.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    metrics = result["metrics"]
    assert metrics["eval_rows"] == 2000
    # compute_metrics received int ids (2000 x 4), not (2000 x 4 x 32000) logits
    assert metrics["eval_pred_bytes"] == 2000 * 4 * 8
    # preprocess saw one batch of full-vocabulary logits at a time
    assert result["batch_shapes"] == [[50, 4, 32000]]
    # storing the logits would need ~1 GB; the evaluation's peak grew by a small fraction of that
    assert result["growth"] < result["logits_bytes"] / 4, result
