"""The one-command GPU check: `python -m bench.gpu --out DIR` (see `__main__.py`)."""
