"""Timed, progress-reporting stages that hand freed memory back to the system as they start."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..progress import StageClock

_MALLOC_TRIM: Any = None
#: glibc's M_MMAP_THRESHOLD, and the fixed value set for it: every allocation of a MiB or more
#: (audio arrays and their temporaries) gets its own mapping and goes back to the system the
#: moment it is freed. Left to itself glibc raises the threshold after each big free (up to
#: 32 MiB), so later temporaries of a few MiB land in the heap, which then holds on to them: the
#: one-click mix's peak memory varied by 50 MB from run to run that way.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def release_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them after big temporaries are
    freed, which would count in the process's memory during the next stage); no-op elsewhere.
    The first call also fixes glibc's mmap threshold (:data:`MMAP_THRESHOLD_BYTES`).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            _MALLOC_TRIM = libc.malloc_trim
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
