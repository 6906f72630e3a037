"""Token-budget batches streamed from sharded files, for corpora larger than memory.

``StreamingTokenBatches`` reads shards in a per-epoch shuffled order, split across ranks, through a shuffle
buffer, and cuts token-budget batches inside length-sorted look-ahead windows; it is deterministic per
``(seed, epoch)`` and resumes mid-epoch from a saved shard and position. ``ShardLines`` reads line-based shards
(JSON Lines, TSV, parallel text; plain or gzip) with positions a resume can seek to.
"""

from samplers.streaming.dataset import StreamingTokenBatches
from samplers.streaming.shard_lines import ShardLines, jsonl_pair, parallel_text, tsv_pair

__all__ = ["ShardLines", "StreamingTokenBatches", "jsonl_pair", "parallel_text", "tsv_pair"]
