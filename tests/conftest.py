"""Shared test fixtures.

Tests that need the real recordings in ``../shared/data`` use the ``shared_data`` fixture and
are skipped cleanly when it is absent (set MELISMA_SHARED_DATA to point elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MELISMA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real recordings not available at {path}")
    return path
