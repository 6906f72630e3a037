"""Hugging Face's names for s2s objects that exist under another name here, so a script ported from the
Hugging Face examples changes only its import lines (``from s2s import HfArgumentParser``)."""

from __future__ import annotations

from s2s.argparser import ArgumentParser

HfArgumentParser = ArgumentParser
"""The same class as ``s2s.ArgumentParser`` (dataclasses -> command line, JSON, YAML, dict)."""

__all__ = ["HfArgumentParser"]
