"""Progress reporting for long work.

Engine functions take ``progress``: a callable ``progress(stage, fraction)`` with ``fraction``
in 0..1 over the whole job. The CLI shows a bar in a terminal; the device service turns the
calls into BLE status notifications.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

ProgressCallback = Callable[[str, float], None]


def no_progress(stage: str, fraction: float) -> None:
    """A progress callback that does nothing."""


class StageClock:
    """Times named stages and reports overall progress from fixed stage weights."""

    def __init__(self, weights: Mapping[str, float], progress: ProgressCallback | None = None):
        total = sum(weights.values()) or 1.0
        self._weights = {k: v / total for k, v in weights.items()}
        self._done = 0.0
        self._progress = progress or no_progress
        self.timings_s: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._progress(name, self._done)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = round(self.timings_s.get(name, 0.0) + time.perf_counter() - start, 4)
        self._done = min(1.0, self._done + self._weights.get(name, 0.0))
        self._progress(name, self._done)


class TerminalProgress:
    """A tqdm bar on stderr, shown only in a terminal and unless quiet."""

    def __init__(self, description: str, *, quiet: bool = False):
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=100, desc=description, unit="%", leave=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, stage: str, fraction: float) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix_str(stage)
        self._bar.n = round(100 * fraction)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
