"""How big each part of the GPU check is: `FULL` for one H200-class GPU in about six minutes, `TINY` for a CPU
run of the same code in about a minute (`--device cpu --tiny`, and the test that keeps it working)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    name: str
    model: dict[str, int] = field(default_factory=dict)
    """d_model, encoder_layers, decoder_layers, num_heads, ffn_dim of both models (ours and BART)."""
    vocab_size: int = 32000
    train_examples: int = 24000
    """Synthetic sentence pairs to draw the training batches from."""
    max_tokens_per_batch: int = 16384
    """Our token budget per batch (padded tokens of the longer side); Hugging Face gets the batch size in
    sentences with the same mean."""
    warmup_steps: int = 5
    """Optimizer steps left out of the timing: CUDA context, kernel selection, allocator growth."""
    train_steps: int = 30
    """Optimizer steps timed per run."""
    repetitions: int = 2
    """Runs per side, alternating ours / Hugging Face; the ratio is the median of the pairwise ratios."""
    generation_sources: int = 512
    generation_batch_size: int = 128
    generation_new_tokens: int = 48
    """Every output is forced to exactly this many new tokens (min = max), so both engines do equal work."""
    generation_beams: tuple[int, ...] = (1, 4)
    generation_precisions: tuple[str, ...] = ("bf16", "fp32")
    peak_size: int = 8192
    """n of the n x n x n matmuls whose rate is the peak MFU is measured against."""
    peak_runs: int = 10
    caps: dict[str, float] = field(default_factory=dict)
    """Seconds each section may take before it is stopped (its partial results are kept)."""


FULL = Settings(
    name="full",
    model={"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "num_heads": 8, "ffn_dim": 2048},
    caps={"environment": 20, "tests": 140, "peak": 20, "training": 110, "generation": 80},
)

TINY = Settings(
    name="tiny",
    model={"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 2, "ffn_dim": 64},
    vocab_size=500,
    train_examples=400,
    max_tokens_per_batch=400,
    warmup_steps=1,
    train_steps=2,
    repetitions=1,
    generation_sources=16,
    generation_batch_size=8,
    generation_new_tokens=4,
    generation_beams=(1, 2),
    generation_precisions=("bf16", "fp32"),
    peak_size=256,
    peak_runs=2,
    caps={"environment": 30, "tests": 120, "peak": 30, "training": 120, "generation": 60},
)
