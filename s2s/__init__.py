"""s2s: a sequence-to-sequence training toolkit with a Hugging Face style Trainer API."""

__version__ = "0.1.0"
