import os
from pathlib import Path

import pytest

from tests.paths import REPO

SHARED_DATA = Path(os.environ.get("S2S_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Real corpora for slow tests; skip where the machine has none (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    return SHARED_DATA
