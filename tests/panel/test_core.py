"""The panel core on CPython: every case of core_cases.py (the same cases run on MicroPython too)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware" / "panel"))
sys.path.insert(0, str(Path(__file__).parent))

import core_cases  # noqa: E402

CASES = core_cases.all_cases()


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[n for n, _ in CASES])
def test_core_case_on_cpython(case):
    case()


def test_doc_examples_hold():
    import doctest

    from mpanel import buttons, encoder, protocol, state

    for module in (buttons, encoder, protocol, state):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
