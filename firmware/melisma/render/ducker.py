"""Dipping the backing's presence band (1-4 kHz) while the voice sings: :class:`Ducker`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dsp
from ..analysis.loudness import CHUNK_SAMPLES, integrated_lufs
from ..errors import RenderError
from .limiter import peak_release
from .stages import Stage, as_2d

#: Presence band that masks the voice's intelligibility, dipped by the ducker.
PRESENCE_LOW_HZ = 1000.0


PRESENCE_HIGH_HZ = 4000.0


#: The ducker's gain is computed once per this many samples and interpolated in between.
DUCK_CONTROL_SAMPLES = 32


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
        assert self.sidechain is not None  # process() refuses a Ducker without one
        loudness = integrated_lufs(self.sidechain, sr=sr)
        return loudness - 20.0 if math.isfinite(loudness) else math.inf

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        if self.sidechain is None:
            raise RenderError("Ducker: no sidechain; pass the vocal as Ducker(sidechain=vocal)")
        x = np.asarray(as_2d(audio), dtype=np.float32)
        n = x.shape[1]
        if self._state is None:
            self._start(sr, x.shape[0])
        out = np.empty_like(x)
        for a in range(0, n, CHUNK_SAMPLES):
            out[:, a : a + CHUNK_SAMPLES] = self._process_chunk(x[:, a : a + CHUNK_SAMPLES])
        return out if audio.ndim == 2 else out[0]

    def control_curve(self, n_samples: int, sr: int, *, channels: int) -> np.ndarray:
        """The cut (1 - gain of the band) at the end of each control step over ``n_samples``, from the sidechain alone.

        What streaming ``n_samples`` of audio through the stage would apply, step by step (the gain is
        interpolated linearly between these values); :attr:`max_dip_db` is set as processing would
        set it. The stage is reset first; a later call with ``reset=False`` would go on from here.

        Examples
        --------
        >>> import numpy as np
        >>> sr = 48000
        >>> vocal = np.r_[np.zeros(sr), 0.3 * np.sin(np.arange(sr) / 5.0)].astype(np.float32)
        >>> cuts = Ducker(duck_db=3.0, sidechain=vocal, threshold_db=-40.0).control_curve(2 * sr, sr, channels=2)
        >>> cuts.shape, float(cuts[:1000].max()), round(float(cuts[-1]), 3)   # no dip while silent, 3 dB once singing
        ((3000,), 0.0, 0.292)
        """
        if self.sidechain is None:
            raise RenderError("Ducker: no sidechain; pass the vocal as Ducker(sidechain=vocal)")
        self.reset()
        self._start(sr, channels)
        steps = -(-int(n_samples) // DUCK_CONTROL_SAMPLES)
        per_block = CHUNK_SAMPLES // DUCK_CONTROL_SAMPLES
        parts = [self._detect_steps(a, min(a + per_block, steps)) for a in range(0, steps, per_block)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _start(self, sr: int, channels: int) -> None:
        """The stream's state: the band filter, the threshold and the detector's coefficients."""
        step = DUCK_CONTROL_SAMPLES
        band = dsp.design("butter", 1, [self.low_hz, self.high_hz], "bandpass", sr, "sos")
        a_det = math.exp(-1000.0 / (10.0 * sr))
        self._state = {
            "sr": sr,
            "band": band.astype(np.float32),
            "band_zi": np.zeros((band.shape[0], channels, 2), np.float32),
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
        assert st is not None  # set when the stream starts
        step = DUCK_CONTROL_SAMPLES
        side = as_2d(np.asarray(self.sidechain, dtype=np.float32))[:, first * step : stop * step]
        side = side.mean(axis=0, dtype=np.float64)
        if side.size < (stop - first) * step:  # sidechain ran out: the vocal is silent from here on
            side = np.concatenate([side, np.zeros((stop - first) * step - side.size)])
        energy = (side * side).reshape(stop - first, step) @ st["det_weights"]
        power, _zi = dsp.lfilter([1.0], [1.0, -st["det_coeff"]], energy, [st["det_coeff"] * st["det_prev"]])
        st["det_prev"] = float(power[-1])
        with np.errstate(divide="ignore"):
            level_db = 10.0 * np.log10(np.maximum(power, 0.0))
        depth = np.clip((level_db - st["threshold"]) / self.knee_db, 0.0, 1.0)
        depth = peak_release(depth, st["release_prev"], st["release_coeff"])
        st["release_prev"] = float(depth[-1]) if depth[-1] > 1e-9 else 0.0
        a_att = st["attack_coeff"]
        depth, _ = dsp.lfilter([1.0 - a_att], [1.0, -a_att], depth, [a_att * st["attack_prev"]])
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
        assert st is not None  # set when the stream starts
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
        band, st["band_zi"] = dsp.sosfilt(st["band"], x, st["band_zi"])
        st["samples"] += n
        st["active"] += int(np.count_nonzero(cut > st["active_cut"]))
        self.active_fraction = st["active"] / st["samples"]
        band *= cut
        return x - band
