"""Generation engine: `GenerationConfig`, greedy / beam / sampling decoding with a key-value cache.

`generate(model, input_ids, attention_mask, generation_config=...)` works with any model that follows the small
protocol in `s2s.generation.protocol` (encode, start_decoding, decode_step, cache.reorder).
"""

from s2s.generation.configuration import GenerationConfig
from s2s.generation.outputs import GenerateOutput, ModelOutput
from s2s.generation.protocol import DecodingCache, GenerationModel
from s2s.generation.search import beam_search, generate, resolve_max_new_tokens, sample_or_greedy

__all__ = [
    "DecodingCache",
    "GenerateOutput",
    "GenerationConfig",
    "GenerationModel",
    "ModelOutput",
    "beam_search",
    "generate",
    "resolve_max_new_tokens",
    "sample_or_greedy",
]
