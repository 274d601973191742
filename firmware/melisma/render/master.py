"""Vocal/backing balance and the master bus for phone listening.

Balance (:func:`balance`) sets the loudness of the processed vocal relative to the backing as
placed in the mix, as the style preset asks (``vocal_to_backing_lu``, BS.1770 integrated
loudness of each), and can dip the backing's presence band (1-4 kHz) while the voice sings
(:class:`Ducker`). The backing keeps its own level; only the vocal moves (the master normalises
the sum afterwards, so absolute levels here do not matter, and the backing, usually a finished
commercial master, is left untouched).

The master (:func:`master`) brings the mix to a target integrated loudness (default -14 LUFS, what
the streaming services and phones play at) with true peaks at or below a ceiling (default
-1 dBTP), using :class:`TruePeakLimiter`: gain computed from the 4x-oversampled peak envelope,
with look-ahead, a hold, smooth attack (two cascaded moving averages over the look-ahead) and
an exponential release. Gain, limiting and loudness are iterated until the loudness is within
0.1 LU of the target; the true peak of the result is then verified with an independent
measurement (:func:`melisma.analysis.loudness.true_peak_dbtp`). It also checks mono
compatibility (phone speakers sum to mono): the L/R correlation and the loudness lost when summed
to mono are reported, and the stereo image is narrowed (side signal turned down) when the mono sum
would lose more than ``max_mono_drop_lu``.

Everything streams in blocks, so the only large allocation is the output itself.

Examples
--------
>>> import numpy as np
>>> from melisma.render.master import master
>>> sr = 48000
>>> rng = np.random.default_rng(0)
>>> mix = (0.05 * rng.standard_normal((2, 5 * sr))).astype(np.float32)
>>> out, report = master(mix, sr=sr, target_lufs=-14.0)
>>> abs(report["integrated_lufs"] + 14.0) <= 0.5, report["true_peak_dbtp"] <= -1.0
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, signal

from ..analysis.loudness import (
    CHUNK_SAMPLES,
    KWeightedHops,
    gated_loudness,
    integrated_lufs,
    interpolator,
)
from ..errors import RenderError
from .stages import Stage, db_to_gain

#: Presence band that masks the voice's intelligibility, dipped by the ducker.
PRESENCE_LOW_HZ = 1000.0
PRESENCE_HIGH_HZ = 4000.0
#: The ducker's gain is computed once per this many samples and interpolated in between.
DUCK_CONTROL_SAMPLES = 32


def _as_2d(audio: np.ndarray) -> np.ndarray:
    return audio[np.newaxis, :] if audio.ndim == 1 else audio


def _check_finite(audio: np.ndarray, name: str) -> None:
    # Summing is one fast pass; NaN or Inf anywhere makes the sum non-finite.
    if not np.isfinite(np.sum(audio, dtype=np.float64)):
        raise RenderError(f"{name} contains NaN or infinite samples; the stage before it produced invalid audio")


# --------------------------------------------------------------------------------------------
# Streaming helpers (vectorised recursions)
# --------------------------------------------------------------------------------------------


def _peak_release(target: np.ndarray, previous: float, coeff: float) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# True-peak limiter
# --------------------------------------------------------------------------------------------


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
        x = _as_2d(audio)
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
        held = ndimage.minimum_filter1d(joined_hold, lookahead)[lookahead // 2 : lookahead // 2 + n]
        st.hold = joined_hold[n:].copy()
        # Release: the gain reduction depth (1 - gain) falls back exponentially.
        coeff = math.exp(-1000.0 / (self.release_ms * st.sr))
        depth = _peak_release(1.0 - held, st.release_prev, coeff)
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
        joined = np.concatenate([_as_2d(head), self.flush()], axis=1)[:, latency:]
        return joined if audio.ndim == 2 else joined[0]


# --------------------------------------------------------------------------------------------
# Ducker and balance
# --------------------------------------------------------------------------------------------


@dataclass
class Ducker(Stage):
    """Dip the backing's presence band (1-4 kHz) while the vocal sings.

    A dynamic EQ cut: ``y = x - (1 - g) * bandpass(x)`` with a second-order band-pass centred
    at 2 kHz, which is exactly a peaking-EQ cut of depth ``g`` (no boost anywhere), and ``g``
    follows the vocal: full ``duck_db`` once the sidechain's level (10 ms RMS) is ``knee_db``
    above ``threshold_db``, none below the threshold, fast attack and ``release_ms`` release.

    Parameters
    ----------
    duck_db : largest dip of the presence band, dB (0 disables).
    sidechain : the vocal, (samples,) or (channels, samples), aligned with the audio. It is
        consumed as the stage streams (``reset=False``), so one long sidechain serves many blocks.
    threshold_db : sidechain RMS level (dBFS) where dipping starts; ``None``: 20 dB below the
        sidechain's integrated loudness, so noise between phrases does not dip.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> backing = (0.1 * rng.standard_normal((2, sr))).astype(np.float32)
    >>> vocal = np.zeros(sr, np.float32)
    >>> Ducker(duck_db=3.0, sidechain=vocal)(backing, sr).shape    # silent vocal: no dip
    (2, 48000)
    """

    duck_db: float = 3.0
    sidechain: np.ndarray | None = field(default=None, repr=False)
    threshold_db: float | None = None
    knee_db: float = 10.0
    attack_ms: float = 10.0
    release_ms: float = 250.0
    low_hz: float = PRESENCE_LOW_HZ
    high_hz: float = PRESENCE_HIGH_HZ
    #: Results since the last reset: deepest dip applied (dB) and the fraction of samples dipped > 0.5 dB.
    max_dip_db: float = field(default=0.0, init=False)
    active_fraction: float = field(default=0.0, init=False)
    _pos: int = field(default=0, init=False, repr=False)
    _state: dict | None = field(default=None, init=False, repr=False)
    #: Internal: a list to record the control values into, or an array of them to replay (the
    #: second pass of :func:`balance_into` reuses the first pass's curve instead of re-detecting).
    _controls: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.duck_db <= 24.0:
            raise RenderError(f"Ducker: duck_db={self.duck_db} is out of range; use 0 to 24 dB (1-4 is typical)")
        if not 0.0 < self.low_hz < self.high_hz:
            raise RenderError(f"Ducker: band {self.low_hz}-{self.high_hz} Hz is empty; use low_hz < high_hz, e.g. 1000-4000")
        if self.knee_db <= 0.0:
            raise RenderError(f"Ducker: knee_db={self.knee_db} must be positive (10 is typical)")

    def describe(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "duck_db": self.duck_db,
            "threshold_db": self.threshold_db,
            "knee_db": self.knee_db,
            "attack_ms": self.attack_ms,
            "release_ms": self.release_ms,
            "low_hz": self.low_hz,
            "high_hz": self.high_hz,
        }

    def reset(self) -> None:
        self._pos = 0
        self._state = None
        self.max_dip_db = 0.0
        self.active_fraction = 0.0

    def _threshold(self, sr: int) -> float:
        if self.threshold_db is not None:
            return float(self.threshold_db)
        loudness = integrated_lufs(self.sidechain, sr=sr)
        return loudness - 20.0 if math.isfinite(loudness) else math.inf

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        if self.sidechain is None:
            raise RenderError("Ducker: no sidechain; pass the vocal as Ducker(sidechain=vocal)")
        x = np.asarray(_as_2d(audio), dtype=np.float32)
        n = x.shape[1]
        if self._state is None:
            step = DUCK_CONTROL_SAMPLES
            band = signal.butter(1, [self.low_hz, self.high_hz], btype="bandpass", fs=sr, output="sos")
            a_det = math.exp(-1000.0 / (10.0 * sr))
            self._state = {
                "sr": sr,
                "band": band.astype(np.float32),
                "band_zi": np.zeros((band.shape[0], x.shape[0], 2), np.float32),
                "threshold": self._threshold(sr),
                # The 10 ms mean-square detector sampled at each control step's last sample, exactly:
                # a weighted sum of the step's squared samples plus the decayed previous value.
                "det_weights": (1.0 - a_det) * a_det ** np.arange(step - 1, -1, -1, dtype=np.float64),
                "det_coeff": a_det**step,
                "det_prev": 0.0,
                "release_coeff": math.exp(-1000.0 * step / (self.release_ms * sr)),
                "release_prev": 0.0,
                "attack_coeff": math.exp(-1000.0 * step / (self.attack_ms * sr)),
                "attack_prev": 0.0,
                # Control values for steps next_step-2 and next_step-1 (silence before the start).
                "next_step": 0,
                "tail": np.zeros(2),
                "samples": 0,
                "active": 0,
                "active_cut": 1.0 - 10.0 ** (-0.5 / 20.0),  # a dip deeper than 0.5 dB counts as active
            }
        out = np.empty_like(x)
        for a in range(0, n, CHUNK_SAMPLES):
            out[:, a : a + CHUNK_SAMPLES] = self._process_chunk(x[:, a : a + CHUNK_SAMPLES])
        return out if audio.ndim == 2 else out[0]

    def _control_steps(self, first: int, stop: int) -> np.ndarray:
        """Cut amounts (1 - gain of the band) at the ends of control steps ``first..stop-1``."""
        if isinstance(self._controls, np.ndarray):
            return self._controls[first:stop]
        cuts = self._detect_steps(first, stop)
        if isinstance(self._controls, list):
            self._controls.append(cuts)
        return cuts

    def _detect_steps(self, first: int, stop: int) -> np.ndarray:
        st = self._state
        step = DUCK_CONTROL_SAMPLES
        side = _as_2d(np.asarray(self.sidechain, dtype=np.float32))[:, first * step : stop * step]
        side = side.mean(axis=0, dtype=np.float64)
        if side.size < (stop - first) * step:  # sidechain ran out: the vocal is silent from here on
            side = np.concatenate([side, np.zeros((stop - first) * step - side.size)])
        energy = (side * side).reshape(stop - first, step) @ st["det_weights"]
        power, _zi = signal.lfilter([1.0], [1.0, -st["det_coeff"]], energy, zi=[st["det_coeff"] * st["det_prev"]])
        st["det_prev"] = float(power[-1])
        with np.errstate(divide="ignore"):
            level_db = 10.0 * np.log10(np.maximum(power, 0.0))
        depth = np.clip((level_db - st["threshold"]) / self.knee_db, 0.0, 1.0)
        depth = _peak_release(depth, st["release_prev"], st["release_coeff"])
        st["release_prev"] = float(depth[-1]) if depth[-1] > 1e-9 else 0.0
        a_att = st["attack_coeff"]
        depth, _ = signal.lfilter([1.0 - a_att], [1.0, -a_att], depth, zi=[a_att * st["attack_prev"]])
        st["attack_prev"] = float(depth[-1])
        if depth.size:
            self.max_dip_db = max(self.max_dip_db, float(self.duck_db * depth.max()))
        return 1.0 - 10.0 ** (-self.duck_db * depth / 20.0)

    def _process_chunk(self, x: np.ndarray) -> np.ndarray:
        # The gain follows the vocal at a control rate (every DUCK_CONTROL_SAMPLES samples, 0.7 ms
        # at 48 kHz, far faster than the 10 ms attack), interpolated linearly in between: the
        # per-sample log/exp work drops 32-fold and the curve depends only on the absolute position,
        # so any block split gives the same output.
        st = self._state
        n = x.shape[1]
        if n == 0:
            return x
        step = DUCK_CONTROL_SAMPLES
        start, self._pos = self._pos, self._pos + n
        first, last = start // step, (start + n - 1) // step
        new = self._control_steps(st["next_step"], last + 1) if last >= st["next_step"] else np.zeros(0)
        controls = np.concatenate([st["tail"], new])  # steps next_step-2 .. last
        base = st["next_step"] - 2
        st["tail"], st["next_step"] = controls[-2:].copy(), max(st["next_step"], last + 1)
        before = controls[first - 1 - base : last - base]
        after = controls[first - base : last + 1 - base]
        ramp = np.arange(1, step + 1, dtype=np.float32) / np.float32(step)
        cut = (before.astype(np.float32)[:, None] + (after - before).astype(np.float32)[:, None] * ramp).ravel()
        cut = cut[start - first * step : start - first * step + n]
        band, st["band_zi"] = signal.sosfilt(st["band"], x, axis=-1, zi=st["band_zi"])
        st["samples"] += n
        st["active"] += int(np.count_nonzero(cut > st["active_cut"]))
        self.active_fraction = st["active"] / st["samples"]
        band *= cut
        return x - band


def balance(
    vocal: np.ndarray, backing: np.ndarray, *, sr: int, vocal_to_backing_lu: float, duck_db: float = 0.0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Place the vocal against the backing at a loudness ratio, optionally ducking the backing.

    The backing keeps its level (it is usually a finished master) apart from the optional
    presence-band dip; the vocal gain is set so that integrated loudness (BS.1770) of the vocal
    minus that of the backing as placed (after ducking) equals ``vocal_to_backing_lu``. The
    ratio is then measured on the placed signals and reported.

    Parameters
    ----------
    vocal, backing : (2, n) (or (n,)) float32, aligned, same shape.
    sr : sample rate, Hz.
    vocal_to_backing_lu : wanted vocal loudness minus backing loudness, LU (style preset:
        e.g. +1 for a forward KTV vocal, -2 for a vocal tucked into a band).
    duck_db : largest dip of the backing's 1-4 kHz band while the vocal sings (0: none).

    Returns
    -------
    vocal_placed, backing_placed, report
        ``report`` keys: ``vocal_to_backing_lu`` (measured), ``target_lu``, ``vocal_gain_db``,
        ``backing_gain_db`` (always 0.0), ``vocal_lufs``, ``backing_lufs`` (both as placed),
        ``duck_db`` (asked), ``duck_db_max`` (deepest dip applied), ``duck_active_fraction``,
        ``duck_backing_change_lu`` (loudness the dip took from the backing).

    Raises
    ------
    RenderError
        Mismatched shapes, NaN samples, or a silent vocal or backing (nothing to balance).

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> vocal = (0.01 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> backing = (0.1 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> v, b, report = balance(vocal, backing, sr=sr, vocal_to_backing_lu=2.0)
    >>> round(report["vocal_to_backing_lu"], 1)
    2.0
    """
    vocal = np.asarray(vocal, dtype=np.float32)
    backing = np.asarray(backing, dtype=np.float32)
    if vocal.shape != backing.shape:
        raise RenderError(
            f"balance: vocal {vocal.shape} and backing {backing.shape} must have the same shape; "
            "align and pad them to the same length first"
        )
    if not math.isfinite(vocal_to_backing_lu) or abs(vocal_to_backing_lu) > 30.0:
        raise RenderError(
            f"balance: vocal_to_backing_lu={vocal_to_backing_lu} is out of range; use -30 to +30 LU (presets use about -3 to +3)"
        )
    _check_finite(vocal, "balance: vocal")
    _check_finite(backing, "balance: backing")
    vocal_hops = KWeightedHops(sr, channels=_as_2d(vocal).shape[0])
    vocal_hops.add(vocal)
    vocal_lufs = vocal_hops.integrated_lufs()
    if not math.isfinite(vocal_lufs):
        raise RenderError("balance: the vocal is silent (integrated loudness -inf LUFS); there is nothing to place")
    backing_raw_lufs = integrated_lufs(backing, sr=sr)
    if not math.isfinite(backing_raw_lufs):
        raise RenderError("balance: the backing is silent (integrated loudness -inf LUFS); there is nothing to balance against")
    report: dict[str, Any] = {
        "target_lu": float(vocal_to_backing_lu),
        "duck_db": float(duck_db),
        "duck_db_max": 0.0,
        "duck_active_fraction": 0.0,
        "duck_backing_change_lu": 0.0,
    }
    backing_placed, backing_lufs = backing, backing_raw_lufs
    if duck_db > 0.0:
        ducker = Ducker(duck_db=duck_db, sidechain=vocal)
        backing_placed = ducker(backing, sr)
        backing_lufs = integrated_lufs(backing_placed, sr=sr)
        report.update(
            duck_db_max=round(ducker.max_dip_db, 3),
            duck_active_fraction=round(ducker.active_fraction, 4),
            duck_backing_change_lu=backing_lufs - backing_raw_lufs,
        )
    vocal_gain_db = vocal_to_backing_lu - (vocal_lufs - backing_lufs)
    vocal_placed = vocal * np.float32(db_to_gain(vocal_gain_db))
    # K-weighting is linear, so the placed vocal's hop energies are the measured ones times the
    # gain: gating them again measures the placed vocal exactly without another filtering pass.
    placed_lufs = gated_loudness(
        vocal_hops.sums.sum(axis=0) * 10.0 ** (vocal_gain_db / 10.0),
        hop=vocal_hops.hop,
        fallback_energy=float(vocal_hops.total_energy().sum()) * 10.0 ** (vocal_gain_db / 10.0),
        fallback_samples=vocal_hops.n_samples,
    )
    report.update(
        vocal_to_backing_lu=placed_lufs - backing_lufs,
        vocal_gain_db=vocal_gain_db,
        backing_gain_db=0.0,
        vocal_lufs=placed_lufs,
        backing_lufs=backing_lufs,
    )
    return vocal_placed, backing_placed, report


# --------------------------------------------------------------------------------------------
# Mono compatibility
# --------------------------------------------------------------------------------------------


@dataclass
class _StereoMeasure:
    """K-weighted per-hop energies of L, R and L*R plus broadband correlation sums."""

    hop: int
    left: np.ndarray
    right: np.ndarray
    cross: np.ndarray
    correlation: float

    def loudness(self, *, side_gain: float = 1.0, gain_db: float = 0.0) -> float:
        """Stereo loudness after scaling the side signal by ``side_gain`` (mid kept) and a gain."""
        mid = (self.left + self.right + 2.0 * self.cross) / 4.0
        side = (self.left + self.right - 2.0 * self.cross) / 4.0
        return gated_loudness(2.0 * (mid + side_gain**2 * side) * 10.0 ** (gain_db / 10.0), hop=self.hop)

    def mono_loudness(self, *, gain_db: float = 0.0) -> float:
        """Loudness of the mono sum (L+R)/2 played on both channels."""
        return gated_loudness((self.left + self.right + 2.0 * self.cross) / 2.0 * 10.0 ** (gain_db / 10.0), hop=self.hop)


def _measure_stereo(mix: np.ndarray, sr: int) -> _StereoMeasure:
    acc = KWeightedHops(sr, channels=2, cross=True)
    ll = rr = lr = 0.0
    for a in range(0, mix.shape[1], CHUNK_SAMPLES):
        chunk = mix[:, a : a + CHUNK_SAMPLES]
        acc.add(chunk)
        ll += float(np.dot(chunk[0], chunk[0]))
        rr += float(np.dot(chunk[1], chunk[1]))
        lr += float(np.dot(chunk[0], chunk[1]))
    correlation = lr / math.sqrt(ll * rr) if ll > 0 and rr > 0 else (1.0 if ll == rr else 0.0)
    sums = acc.sums
    return _StereoMeasure(hop=acc.hop, left=sums[0], right=sums[1], cross=acc.cross, correlation=float(correlation))


def mono_compatibility(mix: np.ndarray, *, sr: int) -> dict[str, float]:
    """L/R correlation and loudness lost when a stereo mix is summed to mono.

    ``correlation`` is the broadband Pearson correlation of left and right (1: mono, 0:
    unrelated, negative: out of phase); ``mono_loudness_drop_lu`` is the stereo integrated
    loudness minus that of (L+R)/2 on both channels (0 for mono content, ~3 LU for unrelated
    channels, large when the channels cancel).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    >>> mono_compatibility(np.stack([y, -y]), sr=48000)["correlation"]
    -1.0
    """
    mix = np.asarray(mix, dtype=np.float32)
    if mix.ndim != 2 or mix.shape[0] != 2:
        raise RenderError(f"mono_compatibility needs stereo (2, samples), got shape {mix.shape}")
    m = _measure_stereo(mix, sr)
    stereo, mono = m.loudness(), m.mono_loudness()
    return {"correlation": round(m.correlation, 4), "mono_loudness_drop_lu": _drop(stereo, mono)}


def _drop(stereo: float, mono: float) -> float:
    if not math.isfinite(stereo):
        return 0.0
    return float(stereo - mono) if math.isfinite(mono) else math.inf


# --------------------------------------------------------------------------------------------
# Master
# --------------------------------------------------------------------------------------------


def master(
    mix: np.ndarray,
    *,
    sr: int,
    target_lufs: float = -14.0,
    ceiling_dbtp: float = -1.0,
    max_mono_drop_lu: float = 3.0,
    max_limiting_lu: float = 6.0,
    lookahead_ms: float = 5.0,
    release_ms: float = 80.0,
    oversample: int = 4,
    tolerance_lu: float = 0.1,
    max_passes: int = 6,
    block_samples: int = 1 << 17,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Master a mix for phone listening: loudness target, true-peak ceiling, mono check.

    Parameters
    ----------
    mix : (2, n) stereo (or (n,) mono) float32.
    sr : sample rate, Hz.
    target_lufs : integrated loudness wanted (BS.1770-4); reached within ``tolerance_lu``.
    ceiling_dbtp : highest true peak allowed (4x oversampled), dBTP.
    max_mono_drop_lu : if the mono sum would be this much quieter than the stereo mix, the side
        signal is turned down until it is not (phones and Bluetooth speakers play mono).
    max_limiting_lu : the most loudness the limiter may squash away; a target that needs more is
        refused (it would pump and distort), naming a target that would work.
    lookahead_ms, release_ms, oversample : the limiter's settings.
    tolerance_lu : how close to the target the loudness iteration stops.
    max_passes : most limiter passes over the mix (each is a full render).
    block_samples : streaming block length (memory/speed trade-off).

    Returns
    -------
    mastered, report
        ``mastered`` has the shape of ``mix``. ``report`` keys: ``integrated_lufs``,
        ``true_peak_dbtp``, ``sample_peak_dbfs``, ``target_lufs``, ``ceiling_dbtp``, ``gain_db``,
        ``limiter_max_gr_db``, ``limiter_loudness_loss_lu``, ``input_lufs``, ``iterations``, and
        ``mono``: ``correlation``, ``mono_loudness_drop_lu`` (of the result), ``input_mono_loudness_drop_lu``,
        ``side_gain`` (1.0 unless narrowed), ``narrowed``.

    Raises
    ------
    RenderError
        Silent or invalid input, or a target the ceiling does not allow without heavy limiting.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> mix = 0.5 * np.sin(2 * np.pi * 220 * np.arange(3 * sr) / sr).astype(np.float32)
    >>> out, report = master(np.stack([mix, mix]), sr=sr, target_lufs=-16.0)
    >>> round(report["integrated_lufs"]), report["mono"]["narrowed"]
    (-16, False)
    """
    mix = np.asarray(mix, dtype=np.float32)
    if mix.ndim not in (1, 2) or (mix.ndim == 2 and mix.shape[0] not in (1, 2)):
        raise RenderError(f"master: mix must be (samples,) or (channels<=2, samples), got shape {mix.shape}")
    # One implementation: the streaming master, writing into a buffer of the mix's shape.
    out = np.empty_like(mix)
    report = master_stream(
        mix,
        sr=sr,
        out=out,
        target_lufs=target_lufs,
        ceiling_dbtp=ceiling_dbtp,
        max_mono_drop_lu=max_mono_drop_lu,
        max_limiting_lu=max_limiting_lu,
        lookahead_ms=lookahead_ms,
        release_ms=release_ms,
        oversample=oversample,
        tolerance_lu=tolerance_lu,
        max_passes=max_passes,
        block_samples=block_samples,
    )
    return out, report


def _read_block(source: Any, a: int, b: int) -> np.ndarray:
    """Samples a:b of an array or of anything with ``read(start, stop)`` (e.g. audio_io.NpyBlockReader)."""
    if isinstance(source, np.ndarray):
        return np.asarray(source[..., a:b], dtype=np.float32)
    return source.read(a, b)


def balance_into(
    vocal: np.ndarray,
    backing: Any,
    *,
    sr: int,
    vocal_to_backing_lu: float,
    duck_db: float = 0.0,
    out: np.ndarray | None = None,
    backing_lufs: float | None = None,
    block_samples: int = CHUNK_SAMPLES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`balance` and the sum in one streaming pass: ``out = vocal * gain + ducked backing``.

    Only ``out`` is full length; the placed vocal and backing never exist as arrays. ``out`` may be
    ``vocal`` itself (the sum is then formed in place, and the backing is dipped twice: once to
    measure the ducked backing's loudness, once to form the sum, re-applying the gain curve the
    first pass detected); any other buffer first receives the ducked backing and then the vocal is
    added (the ducker runs once).

    Parameters
    ----------
    vocal : (channels, n) float32 (the processed vocal, usually stereo after the reverb).
    backing : (channels, n) float32 array, or a reader with ``read(start, stop)`` and ``shape``
        (:class:`melisma.audio_io.NpyBlockReader`, which pads with zeros past its end).
    sr, vocal_to_backing_lu, duck_db : as in :func:`balance`.
    out : (channels, n) float32 C-contiguous buffer for the mix; ``None`` allocates one.
    backing_lufs : integrated loudness of the raw backing if already known (skips measuring it).
    block_samples : samples per block.

    Returns
    -------
    mix, report
        The report has the keys of :func:`balance`'s.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> vocal = (0.01 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> backing = (0.1 * rng.standard_normal((2, 3 * sr))).astype(np.float32)
    >>> mix, report = balance_into(vocal, backing, sr=sr, vocal_to_backing_lu=2.0, out=vocal)
    >>> mix is vocal, round(report["vocal_to_backing_lu"], 1)
    (True, 2.0)
    """
    vocal = np.asarray(vocal, dtype=np.float32)
    if vocal.ndim != 2:
        raise RenderError(f"balance_into: vocal must be (channels, samples), got shape {vocal.shape}")
    channels, n = vocal.shape
    backing_shape = tuple(getattr(backing, "shape", ()))
    if len(backing_shape) != 2 or backing_shape[0] != channels:
        raise RenderError(f"balance_into: backing {backing_shape} must have the vocal's {channels} channels")
    if isinstance(backing, np.ndarray) and backing.shape[1] != n:
        raise RenderError(
            f"balance_into: vocal {vocal.shape} and backing {backing.shape} must have the same length; "
            "align and pad them to the same length first"
        )
    if not math.isfinite(vocal_to_backing_lu) or abs(vocal_to_backing_lu) > 30.0:
        raise RenderError(f"balance_into: vocal_to_backing_lu={vocal_to_backing_lu} is out of range; use -30 to +30 LU")
    if out is None:
        out = np.empty((channels, n), np.float32)
    elif out.shape != (channels, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise RenderError(f"balance_into: out must be C-contiguous float32 {(channels, n)}, got {out.dtype} {out.shape}")
    in_place = np.shares_memory(out, vocal)
    if in_place and (out.__array_interface__["data"][0] != vocal.__array_interface__["data"][0] or out.strides != vocal.strides):
        raise RenderError(
            "balance_into: out overlaps the vocal without being the vocal itself; pass out=vocal or a separate buffer"
        )
    _check_finite(vocal, "balance_into: vocal")

    vocal_hops = KWeightedHops(sr, channels=channels)
    vocal_hops.add(vocal)
    vocal_lufs = vocal_hops.integrated_lufs()
    if not math.isfinite(vocal_lufs):
        raise RenderError("balance: the vocal is silent (integrated loudness -inf LUFS); there is nothing to place")

    def new_ducker() -> Ducker:
        # The sidechain is the vocal as given, so its threshold is the vocal's loudness - 20 dB, as Ducker works it out.
        return Ducker(duck_db=duck_db, sidechain=vocal, threshold_db=vocal_lufs - 20.0)

    raw_meter = KWeightedHops(sr, channels=channels) if backing_lufs is None else None
    placed_meter = KWeightedHops(sr, channels=channels)
    ducker = new_ducker() if duck_db > 0.0 else None
    if ducker is not None and in_place:
        ducker._controls = []  # keep the control-rate curve (n / 32 values) for pass 2
    for a in range(0, n, block_samples):  # pass 1: measure the backing as placed (and keep it, unless in place)
        b = min(a + block_samples, n)
        block = _read_block(backing, a, b)
        if not np.isfinite(np.sum(block, dtype=np.float64)):
            raise RenderError("balance: backing contains NaN or infinite samples; the stage before it produced invalid audio")
        if raw_meter is not None:
            raw_meter.add(block)
        if ducker is not None:
            block = ducker(block, sr, reset=False)
        placed_meter.add(block)
        if not in_place:
            out[:, a:b] = block
    backing_raw_lufs = raw_meter.integrated_lufs() if raw_meter is not None else float(backing_lufs)
    if not math.isfinite(backing_raw_lufs):
        raise RenderError("balance: the backing is silent (integrated loudness -inf LUFS); there is nothing to balance against")
    placed_backing_lufs = placed_meter.integrated_lufs() if ducker is not None else backing_raw_lufs
    vocal_gain_db = vocal_to_backing_lu - (vocal_lufs - placed_backing_lufs)
    gain = np.float32(db_to_gain(vocal_gain_db))

    second = None
    if in_place and ducker is not None:
        # Pass 2 dips the backing again with the curve pass 1 detected (same blocks, same steps):
        # only the band filter runs again. The vocal is overwritten in pass 2, so the curve could
        # not be detected from it there anyway past the current block.
        second = new_ducker()
        second._controls = np.concatenate(ducker._controls) if ducker._controls else np.zeros(0)
        ducker._controls = None
    for a in range(0, n, block_samples):  # pass 2: add the placed vocal
        b = min(a + block_samples, n)
        if in_place:
            block = _read_block(backing, a, b)
            if second is not None:
                block = second(block, sr, reset=False)  # reads the sidechain up to b before out[:, a:b] changes
            np.multiply(out[:, a:b], gain, out=out[:, a:b])
            out[:, a:b] += block
        else:
            out[:, a:b] += vocal[:, a:b] * gain

    placed_lufs = gated_loudness(
        vocal_hops.sums.sum(axis=0) * 10.0 ** (vocal_gain_db / 10.0),
        hop=vocal_hops.hop,
        fallback_energy=float(vocal_hops.total_energy().sum()) * 10.0 ** (vocal_gain_db / 10.0),
        fallback_samples=vocal_hops.n_samples,
    )
    report: dict[str, Any] = {
        "target_lu": float(vocal_to_backing_lu),
        "duck_db": float(duck_db),
        "duck_db_max": 0.0,
        "duck_active_fraction": 0.0,
        "duck_backing_change_lu": 0.0,
        "vocal_to_backing_lu": placed_lufs - placed_backing_lufs,
        "vocal_gain_db": vocal_gain_db,
        "backing_gain_db": 0.0,
        "vocal_lufs": placed_lufs,
        "backing_lufs": placed_backing_lufs,
    }
    if ducker is not None:
        report.update(
            duck_db_max=round(ducker.max_dip_db, 3),
            duck_active_fraction=round(ducker.active_fraction, 4),
            duck_backing_change_lu=placed_backing_lufs - backing_raw_lufs,
        )
    return out, report


def master_stream(
    mix: np.ndarray,
    *,
    sr: int,
    writer: Any = None,
    out: np.ndarray | None = None,
    target_lufs: float = -14.0,
    ceiling_dbtp: float = -1.0,
    max_mono_drop_lu: float = 3.0,
    max_limiting_lu: float = 6.0,
    lookahead_ms: float = 5.0,
    release_ms: float = 80.0,
    oversample: int = 4,
    tolerance_lu: float = 0.3,
    max_passes: int = 4,
    block_samples: int = CHUNK_SAMPLES,
) -> dict[str, Any]:
    """:func:`master`, streamed block by block into an audio writer or a caller's buffer.

    The mastered mix is never held whole: gain, mono narrowing and the true-peak limiter run
    block by block into ``writer`` (an :class:`melisma.audio_io.AudioWriter`, or anything with
    ``write(block)`` and ``restart()``) or into ``out``, while output loudness, true peak,
    sample peak and the stereo/mono measures are taken on the fly. The first pass usually lands
    within ``tolerance_lu`` (the limiter takes little loudness from a mix with headroom); when
    heavy limiting makes it miss, the pass is redone with a corrected gain (the writer is
    restarted), as :func:`master` iterates.

    Parameters
    ----------
    mix : (2, n) or (1, n) float32, not modified.
    writer : receives (channels, block) float32 blocks; ``restart()`` is called before a redo.
    out : (channels, n) float32 buffer instead of a writer (must not be ``mix`` itself: a redo
        needs the input again).
    tolerance_lu : how far from the target the loudness may land without a redo (0.3 LU is
        inaudible; :func:`master` uses 0.1 with a full in-memory buffer).
    max_passes : most passes (each writes the whole output).
    Others as in :func:`master`.

    Returns
    -------
    dict
        The report of :func:`master`, plus ``passes``.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> mix = (0.05 * rng.standard_normal((2, 5 * sr))).astype(np.float32)
    >>> out = np.empty_like(mix)
    >>> report = master_stream(mix, sr=sr, out=out, target_lufs=-14.0)
    >>> abs(report["integrated_lufs"] + 14.0) <= 0.3, report["true_peak_dbtp"] <= -1.0
    (True, True)
    """
    from ..analysis.loudness import TruePeakMeter

    mix = np.asarray(mix, dtype=np.float32)
    x = _as_2d(mix)
    if x.ndim != 2 or x.shape[0] not in (1, 2):
        raise RenderError(f"master_stream: mix must be (samples,) or (channels<=2, samples), got shape {mix.shape}")
    if (writer is None) == (out is None):
        raise RenderError("master_stream: give exactly one of writer= (an AudioWriter) or out= (a buffer)")
    if out is not None:
        if out.shape != mix.shape or out.dtype != np.float32:
            raise RenderError(f"master_stream: out must be float32 {mix.shape}, got {out.dtype} {out.shape}")
        if np.shares_memory(out, mix):
            raise RenderError("master_stream: out must not share memory with mix (a second pass re-reads the mix)")
        out2 = _as_2d(out)
    if not -40.0 <= target_lufs <= 0.0:
        raise RenderError(f"master: target_lufs={target_lufs} is out of range; use -40 to 0 LUFS (-14 for phones and streaming)")
    if not -20.0 <= ceiling_dbtp <= 0.0:
        raise RenderError(f"master: ceiling_dbtp={ceiling_dbtp} is out of range; use -20 to 0 dBTP (-1 for lossy phone codecs)")
    _check_finite(x, "master: mix")
    channels, n = x.shape

    if channels == 2:
        measure = _measure_stereo(x, sr)
        input_lufs, mono_lufs, correlation = measure.loudness(), measure.mono_loudness(), measure.correlation
    else:
        input_lufs = integrated_lufs(x, sr=sr)
        mono_lufs, correlation = input_lufs, 1.0
    if not math.isfinite(input_lufs):
        raise RenderError("master: the mix is silent (integrated loudness -inf LUFS); check the vocal and backing levels")
    input_drop = _drop(input_lufs, mono_lufs)
    side_gain = 1.0
    if channels == 2 and input_drop > max_mono_drop_lu:
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2.0
            if _drop(measure.loudness(side_gain=mid), mono_lufs) > max_mono_drop_lu:
                hi = mid
            else:
                lo = mid
        side_gain = lo
    source_lufs = measure.loudness(side_gain=side_gain) if channels == 2 else input_lufs

    limiter = TruePeakLimiter(ceiling_dbtp=ceiling_dbtp, lookahead_ms=lookahead_ms, release_ms=release_ms, oversample=oversample)
    latency = limiter.latency_samples(sr)
    ceiling_lin = np.float32(db_to_gain(ceiling_dbtp))

    def render(gain_db: float, ceiling: float, write: bool = True) -> dict[str, Any]:
        limiter.ceiling_dbtp = ceiling
        limiter.reset()
        hops = KWeightedHops(sr, channels=channels, cross=channels == 2)
        peak_meter = TruePeakMeter(channels=channels, oversample=oversample)
        dots = np.zeros(3)
        gain = np.float32(db_to_gain(gain_db))
        position = -latency

        def emit(y: np.ndarray) -> None:
            nonlocal position
            start, position = position, position + y.shape[1]
            lo, hi = max(start, 0), min(position, n)
            if hi <= lo:
                return
            block = y[:, lo - start : hi - start]
            np.clip(block, -ceiling_lin, ceiling_lin, out=block)  # no-op unless the limiter overshoots
            hops.add(block)
            peak_meter.add(block)
            if channels == 2:
                dots[:] += (
                    float(np.dot(block[0], block[0])),
                    float(np.dot(block[1], block[1])),
                    float(np.dot(block[0], block[1])),
                )
            if writer is None:
                out2[:, lo:hi] = block
            elif write:
                writer.write(block if mix.ndim == 2 else block[0])

        for a in range(0, n, block_samples):
            block = x[:, a : a + block_samples]
            if side_gain != 1.0:
                mid = (block[0] + block[1]) * np.float32(0.5)
                side = (block[0] - block[1]) * np.float32(0.5 * side_gain)
                block = np.stack([mid + side, mid - side])
            emit(limiter(block * gain, sr, reset=False))
        emit(limiter(np.zeros((channels, latency), np.float32), sr, reset=False))
        result = {
            "lufs": hops.integrated_lufs(),
            "max_gr": limiter.max_gain_reduction_db,
            "peak": peak_meter.dbtp,
            "sample_peak": peak_meter.sample_peak,
        }
        if channels == 2:
            ll, rr, lr = dots
            corr = lr / math.sqrt(ll * rr) if ll > 0 and rr > 0 else (1.0 if ll == rr else 0.0)
            stereo = _StereoMeasure(hop=hops.hop, left=hops.sums[0], right=hops.sums[1], cross=hops.cross, correlation=corr)
            result["mono"] = {
                "correlation": round(float(corr), 4),
                "mono_loudness_drop_lu": _drop(stereo.loudness(), stereo.mono_loudness()),
            }
        return result

    margin_db = 0.1
    gain_db = target_lufs - source_lufs
    below: tuple[float, float] | None = None
    above: tuple[float, float] | None = None
    previous: tuple[float, float] | None = None
    passes = 0
    # The first pass goes straight to the writer (most mixes land on target at once); if it has
    # to be redone, the next passes only measure, and one last pass writes: an encoder (AAC is
    # ~2 s per 3 minutes) then runs at most twice however many passes the gain search takes.
    write_pass = True
    written = False
    while True:
        passes += 1
        if write_pass and written and writer is not None:
            writer.restart()
        result = render(gain_db, ceiling_dbtp - margin_db, write=write_pass)
        written = written or write_pass
        wrote_this = write_pass
        out_lufs, max_gr, peak = result["lufs"], result["max_gr"], result["peak"]
        error = target_lufs - out_lufs
        loss = source_lufs + gain_db - out_lufs
        if error > 0 and loss > max_limiting_lu:
            workable = math.floor((out_lufs - (loss - max_limiting_lu) - 0.5) * 2.0) / 2.0
            raise RenderError(
                f"master: target_lufs={target_lufs:g} needs the limiter to squash more than {loss:.1f} LU of loudness "
                f"(peaks reduced by up to {max_gr:.1f} dB) to keep this mix under {ceiling_dbtp:g} dBTP, more than "
                f"max_limiting_lu={max_limiting_lu:g}; use target_lufs={workable:g} or lower, or a higher ceiling_dbtp"
            )
        if passes >= max_passes or (abs(error) <= tolerance_lu and peak <= ceiling_dbtp):
            if writer is not None and not wrote_this:
                writer.restart()
                render(gain_db, ceiling_dbtp - margin_db, write=True)  # deterministic: the measured pass again
            break
        write_pass = writer is None
        if peak > ceiling_dbtp:
            margin_db += peak - ceiling_dbtp + 0.02
        if abs(error) > tolerance_lu:
            point = (gain_db, out_lufs)
            if error > 0:
                below = point
            else:
                above = point
            if below and above:
                span = above[0] - below[0]
                guess = below[0] + (target_lufs - below[1]) * span / (above[1] - below[1])
                gain_db = min(max(guess, below[0] + 0.1 * span), above[0] - 0.1 * span)
            else:
                slope = 1.0
                if previous is not None and previous[0] != gain_db:
                    slope = min(1.0, max(0.1, (out_lufs - previous[1]) / (gain_db - previous[0])))
                gain_db += max(-12.0, min(12.0, error / slope))
            previous = point

    sample_peak = result["sample_peak"]
    if channels == 2:
        mono_report = dict(result["mono"])
        mono_report.update(
            input_mono_loudness_drop_lu=input_drop,
            input_correlation=round(correlation, 4),
            side_gain=round(side_gain, 4),
            narrowed=side_gain != 1.0,
        )
    else:
        mono_report = {
            "correlation": 1.0,
            "mono_loudness_drop_lu": 0.0,
            "input_mono_loudness_drop_lu": 0.0,
            "input_correlation": 1.0,
            "side_gain": 1.0,
            "narrowed": False,
        }
    return {
        "integrated_lufs": out_lufs,
        "true_peak_dbtp": peak,
        "sample_peak_dbfs": 20.0 * math.log10(sample_peak) if sample_peak > 0 else -math.inf,
        "target_lufs": float(target_lufs),
        "ceiling_dbtp": float(ceiling_dbtp),
        "gain_db": gain_db,
        "limiter_max_gr_db": max_gr,
        "limiter_loudness_loss_lu": source_lufs + gain_db - out_lufs,
        "input_lufs": input_lufs,
        "iterations": passes,
        "passes": passes,
        "mono": mono_report,
    }
