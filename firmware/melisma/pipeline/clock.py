"""Timed, progress-reporting stages that hand freed memory back to the system as they start."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..progress import StageClock

_MALLOC_TRIM: Any = None


def release_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them after big temporaries are
    freed, which would count in the process's memory during the next stage); no-op elsewhere.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        with contextlib.suppress(Exception):
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


@contextlib.contextmanager
def timed_stage(clock: StageClock, name: str, *, release: bool = True) -> Iterator[None]:
    """A timed stage that starts with the previous stages' freed memory handed back (``release``:
    a preview's temporaries are small, and handing pages back costs a millisecond each time).
    """
    if release:
        release_memory()
    with clock.stage(name):
        yield
