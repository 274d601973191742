"""A look-ahead brickwall limiter on the true (oversampled) peak: the master's last stage.

:class:`TruePeakLimiter` computes, for each sample interval, the gain the 4x-oversampled peak
needs to stay under ``ceiling_dbtp``; the gain is held over the look-ahead, released
exponentially and smoothed by two cascaded moving averages, so it glides down ahead of each peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dsp
from ..analysis.loudness import CHUNK_SAMPLES, interpolator
from ..errors import RenderError
from .stages import Stage, as_2d, db_to_gain


def peak_release(target: np.ndarray, previous: float, coeff: float) -> np.ndarray:
    """``out[n] = max(target[n], coeff * out[n-1])`` (instant rise, exponential fall), vectorised.

    In the log domain the recursion is a running maximum of ``log target[k] - k log coeff``,
    so it runs as one ``np.maximum.accumulate`` instead of a Python loop.
    """
    n = target.size
    log_coeff = math.log(coeff)
    ramp = np.arange(n, dtype=np.float64) * log_coeff
    with np.errstate(divide="ignore"):
        running = np.maximum.accumulate(np.log(target) - ramp)
        if previous > 0.0:
            np.maximum(running, math.log(previous) + log_coeff, out=running)
    return np.exp(running + ramp)


def _moving_average(values: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean over ``len(history) + 1`` samples; returns (means, new history)."""
    length = history.size + 1
    joined = np.concatenate([history, values])
    csum = np.concatenate([[0.0], np.cumsum(joined)])
    means = (csum[length:] - csum[:-length]) / length
    return means, joined[joined.size - history.size :].copy()


@dataclass
class _LimiterState:
    sr: int
    channels: int
    context: np.ndarray  # input samples the interpolator still needs (channels, left + right)
    delay: np.ndarray  # delay line aligning audio with its gain (channels, latency)
    hold: np.ndarray  # last lookahead-1 required gains
    box1: np.ndarray
    box2: np.ndarray
    env_prev: float = 0.0
    release_prev: float = 0.0


@dataclass
class TruePeakLimiter(Stage):
    """Look-ahead brickwall limiter on the oversampled (true) peak envelope.

    For each sample interval the peak of the signal interpolated ``oversample`` times (both
    channels, linked) gives the gain it needs to stay under ``ceiling_dbtp``. That required gain
    is held for ``lookahead_ms`` (a running minimum), released exponentially with time constant
    ``release_ms``, and smoothed by two cascaded moving averages spanning the look-ahead, so
    the gain glides down ahead of each peak and never exceeds what the peak needs. The audio is
    delayed to line up with its gain: a streaming call returns audio ``latency_samples(sr)``
    late (like any look-ahead limiter); :meth:`limit` returns it aligned, flushed.

    The gain moves at audio rate on the base-rate signal; because it is smooth, the true peak of
    the output stays at the ceiling within a few hundredths of a dB (:func:`master` verifies it
    and leaves a small margin).

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> y = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32) * 2.0
    >>> limiter = TruePeakLimiter(ceiling_dbtp=-1.0)
    >>> out = limiter.limit(y, sr)
    >>> out.shape == y.shape, float(np.abs(out).max()) <= 10 ** (-1 / 20)
    (True, True)
    """

    ceiling_dbtp: float = -1.0
    lookahead_ms: float = 5.0
    release_ms: float = 80.0
    oversample: int = 4
    #: Largest gain reduction applied since the last reset, dB (read-only result).
    max_gain_reduction_db: float = field(default=0.0, init=False)
    _state: _LimiterState | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ceiling_dbtp > 0.0:
            raise RenderError(
                f"TruePeakLimiter: ceiling_dbtp={self.ceiling_dbtp} is above full scale; use 0.0 or lower (-1.0 for phones)"
            )
        if not 0.5 <= self.lookahead_ms <= 50.0:
            raise RenderError(
                f"TruePeakLimiter: lookahead_ms={self.lookahead_ms} is out of range; use 0.5 to 50 ms (5 is typical)"
            )
        if not 1.0 <= self.release_ms <= 5000.0:
            raise RenderError(
                f"TruePeakLimiter: release_ms={self.release_ms} is out of range; use 1 to 5000 ms (50-200 is typical)"
            )
        if int(self.oversample) != self.oversample or self.oversample < 4:
            raise RenderError(f"TruePeakLimiter: oversample={self.oversample}; use a whole number of at least 4 (BS.1770-4)")

    def describe(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "ceiling_dbtp": self.ceiling_dbtp,
            "lookahead_ms": self.lookahead_ms,
            "release_ms": self.release_ms,
            "oversample": self.oversample,
        }

    def _lookahead_samples(self, sr: int) -> int:
        return max(2, int(round(self.lookahead_ms * sr / 1000.0)))

    def latency_samples(self, sr: int) -> int:
        """Delay of a streaming call's output relative to its input, in samples."""
        return interpolator(int(self.oversample)).right + self._lookahead_samples(sr) - 1

    def reset(self) -> None:
        self._state = None
        self.max_gain_reduction_db = 0.0

    def _new_state(self, channels: int, sr: int) -> _LimiterState:
        interp = interpolator(int(self.oversample))
        lookahead = self._lookahead_samples(sr)
        box1 = lookahead // 2 + 1  # box1 + box2 - 1 == lookahead: the smoothing stays inside the hold
        box2 = lookahead - box1 + 1
        return _LimiterState(
            sr=sr,
            channels=channels,
            context=np.zeros((channels, interp.left + interp.right), np.float32),
            delay=np.zeros((channels, self.latency_samples(sr)), np.float32),
            hold=np.ones(lookahead - 1),
            box1=np.ones(box1 - 1),
            box2=np.ones(box2 - 1),
        )

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = as_2d(audio)
        if self._state is None:
            self._state = self._new_state(x.shape[0], sr)
        elif self._state.channels != x.shape[0] or self._state.sr != sr:
            raise RenderError(
                f"TruePeakLimiter: streaming block has {x.shape[0]} channels at {sr} Hz but the stream "
                f"started with {self._state.channels} at {self._state.sr} Hz; call with reset=True"
            )
        out = np.empty_like(x)
        for a in range(0, x.shape[1], CHUNK_SAMPLES):
            out[:, a : a + CHUNK_SAMPLES] = self._process_chunk(x[:, a : a + CHUNK_SAMPLES])
        return out if audio.ndim == 2 else out[0]

    def _process_chunk(self, x: np.ndarray) -> np.ndarray:
        st = self._state
        assert st is not None  # set by process() before any chunk
        interp = interpolator(int(self.oversample))
        ceiling = db_to_gain(self.ceiling_dbtp)
        n = x.shape[1]
        if n == 0:
            return x
        joined = np.concatenate([st.context, x], axis=1)
        st.context = joined[:, n:].copy()
        envelope = interp.envelope(joined, threshold=ceiling)  # peak of each interval, `right` samples late
        # The interval before counts too: the gain between two samples is theirs interpolated.
        previous = np.concatenate([[st.env_prev], envelope[:-1]])
        st.env_prev = float(envelope[-1])
        np.maximum(envelope, previous, out=envelope)
        delayed = np.concatenate([st.delay, x], axis=1)
        st.delay = delayed[:, n:].copy()
        delayed = delayed[:, :n]
        idle = (
            float(envelope.max()) <= ceiling
            and st.release_prev == 0.0
            and st.hold.min() >= 1.0
            and st.box1.min() >= 1.0
            and st.box2.min() >= 1.0
        )
        if idle:  # nothing to limit in reach: skip the gain computer (most of a quiet song)
            st.hold = np.ones_like(st.hold)
            return delayed
        required = np.minimum(1.0, ceiling / np.maximum(envelope.astype(np.float64), 1e-30))
        # Hold: the smallest gain needed anywhere in the look-ahead window.
        lookahead = st.hold.size + 1
        joined_hold = np.concatenate([st.hold, required])
        held = dsp.sliding_min(joined_hold, lookahead)  # == minimum_filter1d(...)[lookahead // 2 : lookahead // 2 + n]
        st.hold = joined_hold[n:].copy()
        # Release: the gain reduction depth (1 - gain) falls back exponentially.
        coeff = math.exp(-1000.0 / (self.release_ms * st.sr))
        depth = peak_release(1.0 - held, st.release_prev, coeff)
        st.release_prev = float(depth[-1]) if depth[-1] > 1e-9 else 0.0
        # Attack: two moving averages whose spans add up to the look-ahead (an S-shaped glide).
        gain, st.box1 = _moving_average(1.0 - depth, st.box1)
        gain, st.box2 = _moving_average(gain, st.box2)
        gain = np.minimum(gain, 1.0)
        smallest = float(gain.min())
        if smallest < 1.0:
            self.max_gain_reduction_db = max(self.max_gain_reduction_db, -20.0 * math.log10(max(smallest, 1e-12)))
        return delayed * gain.astype(np.float32)

    def flush(self) -> np.ndarray:
        """The last ``latency_samples`` of output still in the delay line (then resets)."""
        if self._state is None:
            return np.zeros((1, 0), np.float32)
        st = self._state
        tail = self._process_chunk(np.zeros((st.channels, st.delay.shape[1]), np.float32))
        grd = self.max_gain_reduction_db
        self.reset()
        self.max_gain_reduction_db = grd
        return tail

    def limit(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Limit a whole signal and return it aligned with the input (latency removed).

        Examples
        --------
        >>> import numpy as np
        >>> TruePeakLimiter().limit(np.zeros((2, 100), np.float32), 48000).shape
        (2, 100)
        """
        audio = np.asarray(audio, dtype=np.float32)
        latency = self.latency_samples(sr)
        head = self(audio, sr, reset=True)
        joined = np.concatenate([as_2d(head), self.flush()], axis=1)[:, latency:]
        return joined if audio.ndim == 2 else joined[0]
