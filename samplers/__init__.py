"""Length-aware samplers: sortish, length-grouped and token-budget; distributed and resumable.

Every sampler is deterministic given ``(seed, epoch)``, shards with ``num_replicas``/``rank`` (equal batch
counts on every rank), and resumes mid-epoch from ``state_dict()`` without reading skipped data.
"""

from samplers.length_grouped import LengthGroupedSampler
from samplers.lengths import as_lengths, example_costs, lengths_from_dataset, stored_lengths
from samplers.ordering import eval_order, restore_order
from samplers.resumable import ResumableSampler
from samplers.sortish import SortishSampler
from samplers.stats import batch_padding_counts, padding_counts, padding_efficiency
from samplers.token_budget import TokenBudgetBatchSampler

__all__ = [
    "LengthGroupedSampler",
    "ResumableSampler",
    "SortishSampler",
    "TokenBudgetBatchSampler",
    "as_lengths",
    "batch_padding_counts",
    "eval_order",
    "example_costs",
    "lengths_from_dataset",
    "padding_counts",
    "padding_efficiency",
    "restore_order",
    "stored_lengths",
]
