"""The one call shape every audio stage shares, in the style of pedalboard's plugins.

A stage is called as ``stage(audio, sr, reset=True)`` and returns processed audio of the same
shape: ``(samples,)`` or ``(channels, samples)`` float32. With ``reset=False`` it keeps its
internal state (filter memories, envelopes, reverb tails) from the previous call, so a long
signal can be streamed block by block and sound the same as one call. Parameters are plain
attributes named with their unit (``threshold_db``, ``attack_ms``, ``cutoff_hz``).

Examples
--------
>>> import numpy as np
>>> from melisma.render.stages import Gain, Chain
>>> chain = Chain([Gain(gain_db=-6.0)])
>>> y = chain(np.ones(4, np.float32), 48000)
>>> round(float(y[0]), 3)
0.501
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from ..errors import RenderError


def db_to_gain(db: float) -> float:
    """Linear gain of a level in dB."""
    return float(10.0 ** (db / 20.0))


def as_2d(audio: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` view of mono or multichannel audio."""
    return audio[np.newaxis, :] if audio.ndim == 1 else audio


def check_finite(audio: np.ndarray, name: str) -> None:
    """Raise :class:`RenderError` naming ``name`` when ``audio`` holds NaN or infinite samples."""
    # Summing is one fast pass; NaN or Inf anywhere makes the sum non-finite.
    if not np.isfinite(np.sum(audio, dtype=np.float64)):
        raise RenderError(f"{name} contains NaN or infinite samples; the stage before it produced invalid audio")


def block_sums(powers: np.ndarray, block: int, acc: np.ndarray, pos: int) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Streaming detector blocks: the sums of ``powers`` ``(bands, n)`` over the blocks of ``block``
    samples that complete in this call, given what the last call left (``acc``, the sums of its
    incomplete block, ``pos`` samples into it). Returns ``(sums or None, acc, pos)`` for the next
    call; the blocks fall where they would in one call, whatever the call sizes.

    >>> sums, acc, pos = block_sums(np.ones((1, 5)), 2, np.zeros(1), 0)
    >>> sums.tolist(), acc.tolist(), pos
    ([[2.0, 2.0]], [1.0], 1)
    """
    n = powers.shape[1]
    ends = np.arange(block - pos, n + 1, block)
    if not ends.size:
        return None, acc + powers.sum(axis=1), pos + n
    starts = np.concatenate(([0], ends[:-1]))
    sums = np.add.reduceat(powers, starts, axis=1)
    sums[:, 0] += acc
    rest = powers[:, ends[-1]:].sum(axis=1)
    sums[:, -1] -= rest
    return sums, rest, n - int(ends[-1])


def ramped_controls(history: np.ndarray, pos0: int, n: int, block: int) -> np.ndarray:
    """Per-sample control for a call of ``n`` samples starting ``pos0`` into its block: a sample of
    block ``k`` ramps from ``history[k]`` to ``history[k + 1]`` (``history`` starts with the two
    values before this call's first block): causal, and the same whatever the call sizes.
    """
    n_blocks = (pos0 + n + block - 1) // block
    ramp = (np.arange(block) / block)[None, :]
    c0, c1 = history[:n_blocks, None], history[1:n_blocks + 1, None]
    return (c0 + (c1 - c0) * ramp).reshape(-1)[pos0:pos0 + n]


class Stage:
    """Base class: subclasses implement :meth:`process` and, if stateful, :meth:`reset`.

    A stage that must see ahead of a sample to process it (a look-ahead limiter, a framed
    denoiser or gate) returns its audio ``latency_samples(sr)`` late, in one call as in a stream,
    so that streaming in blocks always gives what one call gives; such stages also offer an
    aligned whole-signal method for offline use.
    """

    def latency_samples(self, sr: int) -> int:
        """How many samples late the output of :meth:`__call__` is (0 for most stages)."""
        return 0

    def __call__(self, audio: np.ndarray, sr: int, reset: bool = True) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim not in (1, 2):
            raise RenderError(f"{type(self).__name__}: audio must be (samples,) or (channels, samples), got shape {audio.shape}")
        if sr <= 0:
            raise RenderError(f"{type(self).__name__}: sample rate must be positive, got sr={sr}")
        if reset:
            self.reset()
        out = self.process(audio, sr)
        return np.asarray(out, dtype=np.float32)

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        """Forget streaming state (called before each ``reset=True`` call)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def describe(self) -> dict[str, Any]:
        """Parameters with their units, for the mix report."""
        if is_dataclass(self):
            return {"stage": self.name, **{f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}}
        return {"stage": self.name}


@dataclass
class Gain(Stage):
    """Multiply by a fixed gain."""

    gain_db: float = 0.0

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        return audio * np.float32(db_to_gain(self.gain_db))


@dataclass
class Chain(Stage):
    """Stages applied in order; itself a stage."""

    stages: Sequence[Stage] = field(default_factory=list)

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        for stage in self.stages:
            audio = stage(audio, sr, reset=False)
        return audio

    def reset(self) -> None:
        for stage in self.stages:
            stage.reset()

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "stages": [s.describe() for s in self.stages]}


class PedalboardStage(Stage):
    """Wrap pedalboard plugins as one stage; pedalboard keeps state when ``reset=False``."""

    def __init__(self, plugins: Sequence[Any], *, label: str | None = None, params: dict[str, Any] | None = None):
        import pedalboard

        self._board = pedalboard.Pedalboard(list(plugins))
        self._label = label or "Pedalboard"
        self._params = dict(params or {})
        self._fresh = True

    @property
    def name(self) -> str:
        return self._label

    @property
    def plugins(self) -> list[Any]:
        """The wrapped pedalboard plugins, in order."""
        return list(self._board)

    def reset(self) -> None:
        self._fresh = True

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        out = self._board(audio, sr, reset=self._fresh)
        self._fresh = False
        return out

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, **self._params}


class OutputDelay:
    """A first-in first-out line of output samples that starts with ``latency`` samples of silence.

    Framed stages push whole frames of finished output as they complete and pop exactly as many
    samples as they were given, so each call returns audio of its input's length, ``latency``
    samples late.
    """

    def __init__(self, channels: int, latency: int):
        self._buffer = np.zeros((channels, int(latency)), np.float32)

    def push(self, block: np.ndarray) -> None:
        """Append finished output ``(channels, samples)``."""
        self._buffer = np.concatenate([self._buffer, block], axis=1)

    @property
    def held(self) -> int:
        """How many samples the line holds now."""
        return int(self._buffer.shape[1])

    def pop(self, n: int) -> np.ndarray:
        """The next ``n`` samples of output (the line always holds enough: see the stage's latency)."""
        if n > self._buffer.shape[1]:
            raise RenderError(f"OutputDelay: {n} samples asked for, {self._buffer.shape[1]} held; this is a bug")
        out, self._buffer = self._buffer[:, :n], self._buffer[:, n:]
        return out

