"""Entry point of ``python -m metrics`` and of the ``s2s-metrics`` script."""

import sys

from metrics.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
