"""Where the tests find the project: the repository root, whatever folder a test file lives in."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
