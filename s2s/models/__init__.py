"""The toolkit's own encoder-decoder Transformer: trained from scratch with the Trainer, or imported from (and
exported to) a Hugging Face BART, mBART, Marian, M2M100/NLLB or T5 folder."""

from s2s.models.cache import TransformerCache
from s2s.models.configuration import TransformerConfig
from s2s.models.hf_export import to_transformers
from s2s.models.hf_families import UnsupportedModelError
from s2s.models.hf_import import from_transformers
from s2s.models.modeling import EncoderState, TransformerForConditionalGeneration
from s2s.models.outputs import Seq2SeqLMOutput
from s2s.models.packed import fixed_weights

__all__ = [
    "EncoderState",
    "Seq2SeqLMOutput",
    "TransformerCache",
    "TransformerConfig",
    "TransformerForConditionalGeneration",
    "UnsupportedModelError",
    "fixed_weights",
    "from_transformers",
    "to_transformers",
]
