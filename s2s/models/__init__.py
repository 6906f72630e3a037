"""The toolkit's own encoder-decoder Transformer (no weights to download: train it with the Trainer)."""

from s2s.models.cache import TransformerCache
from s2s.models.configuration import TransformerConfig
from s2s.models.modeling import EncoderState, TransformerForConditionalGeneration
from s2s.models.outputs import Seq2SeqLMOutput

__all__ = [
    "EncoderState",
    "Seq2SeqLMOutput",
    "TransformerCache",
    "TransformerConfig",
    "TransformerForConditionalGeneration",
]
