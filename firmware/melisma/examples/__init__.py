"""The bundled example take and backing (made by tools/make_examples.py; see README.txt here)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DecodeError

FOLDER = Path(__file__).resolve().parent


def _one(pattern: str) -> Path:
    found = sorted(FOLDER.glob(pattern))
    if not found:
        raise DecodeError(
            f"the bundled example {pattern} is missing from {FOLDER}; reinstall Melisma or run tools/make_examples.py"
        )
    return found[0]


def __getattr__(name: str) -> Path:
    if name == "TAKE":
        return _one("take*.m4a")
    if name == "BACKING":
        return _one("backing*.m4a")
    if name == "MELODY":
        return _one("melody*.mid")
    raise AttributeError(name)
