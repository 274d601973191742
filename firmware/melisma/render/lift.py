"""A presence lift that backs off on esses: the ``brighter`` slider without undoing the de-esser.

``warmth = -1`` ("brighter") lifts 1.5-6 kHz (+4.5 dB at 4.4 kHz, Q 0.6). As a static EQ after
the de-esser it gives an ess back most of what the de-esser took (measured: two thirds on a real
take, ``firmware/docs/restore.md``). :class:`SibilanceKeyedEQ` applies the same peak bands as a
*dynamic* EQ: the output is ``x + k(t) * (peaks(x) - x)``, with ``k = 1`` on voiced sound (the
0.2-3 kHz band well above the sibilance band) and ``k = 0`` on esses (the sibilance band within
``ess_db`` of the 0.2-3 kHz band, or above it). So vowels get the whole lift and esses keep the
level the de-esser left them.

It sits in the vocal chain's *wet* part (right after the tonal EQ), which a slider move re-runs;
the de-esser, in the dry part, is untouched (the cached dry vocal stays valid).

The key is measured per ``block_ms`` block from past blocks only and ramped per sample, as the
de-esser's gain, so streaming with ``reset=False`` gives exactly what one call gives. ``k`` falls
in one block (an ess onset is caught within two blocks, 5 ms) and rises over ``release_ms``.

Examples
--------
>>> import numpy as np
>>> sr = 48000
>>> t = np.arange(sr) / sr
>>> vowel = (0.1 * sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 30))).astype(np.float32)
>>> lift = SibilanceKeyedEQ(bands=({"freq_hz": 4400.0, "gain_db": 4.5, "q": 0.6},))
>>> top = lambda y: float(np.sum(np.abs(np.fft.rfft(y[sr // 2:]))[3000:6000] ** 2))  # 3-6 kHz
>>> bool(10 * np.log10(top(lift(vowel, sr)) / top(vowel)) > 3.0)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dsp
from ..errors import RenderError
from .stages import Stage, block_sums, ramped_controls

#: The band type of :class:`melisma.semantic.EqBand` that this stage applies (a peak keyed off by esses).
KEYED_PEAK = "keyed_peak"


def peak_sos(freq_hz: float, gain_db: float, q: float, *, sr: int) -> np.ndarray:
    """RBJ-cookbook peaking biquad (the curve of pedalboard's ``PeakFilter``) as one second-order section.

    >>> peak_sos(4400.0, 4.5, 0.6, sr=48000).shape
    (1, 6)
    """
    if not (0 < freq_hz < 0.5 * sr and q > 0):
        raise RenderError(f"keyed peak: need 0 < freq_hz < sr/2 and q > 0, got freq_hz={freq_hz}, q={q} at sr={sr}")
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / sr
    alpha = math.sin(w0) / (2.0 * q)
    b = np.array([1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


@dataclass
class SibilanceKeyedEQ(Stage):
    """Peak bands applied in full on voiced sound and not at all on esses.

    Parameters
    ----------
    bands : tuple of dict
        Peak bands, each ``{"freq_hz", "gain_db", "q"}`` (RBJ peaking EQ).
    sib_hz : tuple of float
        The sibilance band the key listens to (5-7.5 kHz: an ess's core, below the 8-16 kHz band
        that the bandwidth extension adds to vowels).
    voiced_db : float
        Sibilance band at or below this level against the 0.2-3 kHz band: full lift.
    ess_db : float
        ... at or above this level: no lift (an ess, even after the de-esser). Linear in dB between.
    block_ms, smooth_ms, release_ms : float
        Block of the key's level detector; smoothing of the band powers (a block is shorter than
        a low voice's period); how long the lift takes to come back after an ess.
    """

    bands: tuple = ()
    sib_hz: tuple = (5000.0, 7500.0)
    voiced_db: float = -15.0
    ess_db: float = -6.0
    block_ms: float = 2.5
    smooth_ms: float = 6.0
    release_ms: float = 40.0
    _design_key: Any = field(default=None, init=False, repr=False)
    _filters: Any = field(default=None, init=False, repr=False)
    _zi: Any = field(default=None, init=False, repr=False)
    _acc: Any = field(default=None, init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)
    _k: float = field(default=1.0, init=False, repr=False)
    _smooth: Any = field(default=None, init=False, repr=False)
    _ks: list = field(default_factory=lambda: [1.0, 1.0], init=False, repr=False)

    def __post_init__(self) -> None:
        self.bands = tuple(dict(b) for b in self.bands)
        for b in self.bands:
            if not {"freq_hz", "gain_db", "q"} <= set(b):
                raise RenderError(f"SibilanceKeyedEQ: a band needs freq_hz, gain_db and q, got {sorted(b)}")
        if not self.voiced_db < self.ess_db:
            raise RenderError(f"SibilanceKeyedEQ: need voiced_db < ess_db, got {self.voiced_db} and {self.ess_db}")
        if not (self.block_ms > 0 and self.release_ms > 0 and self.smooth_ms > 0 and 0 < self.sib_hz[0] < self.sib_hz[1]):
            raise RenderError(f"SibilanceKeyedEQ: need block_ms, release_ms > 0 and 0 < sib_hz[0] < sib_hz[1], got "
                              f"block_ms={self.block_ms}, release_ms={self.release_ms}, sib_hz={self.sib_hz}")

    def reset(self) -> None:
        self._zi = None
        self._acc = np.zeros(2)
        self._pos = 0
        self._k = 1.0
        self._smooth = np.zeros(2)
        self._ks = [1.0, 1.0]

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "bands": [dict(b) for b in self.bands], "sib_hz": list(self.sib_hz),
                "voiced_db": self.voiced_db, "ess_db": self.ess_db, "smooth_ms": self.smooth_ms,
                "release_ms": self.release_ms}

    def _design(self, sr: int) -> dict[str, np.ndarray]:
        if self._design_key != sr:
            lo, hi = self.sib_hz[0], min(self.sib_hz[1], 0.45 * sr)
            if lo >= hi:
                raise RenderError(f"SibilanceKeyedEQ: sibilance band {self.sib_hz} Hz is above Nyquist for sr={sr}")
            peaks = [peak_sos(float(b["freq_hz"]), float(b["gain_db"]), float(b["q"]), sr=sr) for b in self.bands]
            self._filters = {
                "peaks": np.concatenate(peaks) if peaks else np.zeros((0, 6)),
                "sib": dsp.design("butter", 4, [float(lo), float(hi)], "bandpass", sr, "sos"),
                "voice": dsp.design("butter", 2, [200.0, 3000.0], "bandpass", sr, "sos"),
            }
            self._design_key = sr
            self._zi = None
        return self._filters

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        filters = self._design(sr)
        x = audio if audio.ndim == 2 else audio[None, :]
        n = x.shape[1]
        if n == 0 or not self.bands:
            return audio
        if self._acc is None:
            self.reset()
        if self._zi is None or self._zi["peaks"].shape[1] != x.shape[0]:
            self._zi = {"peaks": np.zeros((filters["peaks"].shape[0], x.shape[0], 2)),
                        "sib": np.zeros((filters["sib"].shape[0], 2)), "voice": np.zeros((filters["voice"].shape[0], 2))}
        mono = x.mean(axis=0) if x.shape[0] > 1 else x[0]
        lifted, self._zi["peaks"] = dsp.sosfilt(filters["peaks"], x, self._zi["peaks"])
        sib, self._zi["sib"] = dsp.sosfilt(filters["sib"], mono, self._zi["sib"])
        voice, self._zi["voice"] = dsp.sosfilt(filters["voice"], mono, self._zi["voice"])

        block = max(1, int(round(sr * self.block_ms / 1000.0)))
        pos0 = self._pos
        powers = np.stack([sib * sib, voice * voice])
        sums, self._acc, self._pos = block_sums(powers, block, self._acc, pos0)
        block_ks = self._block_keys(sums, block, sr) if sums is not None else np.zeros(0)
        k_hist = np.concatenate((self._ks, block_ks))
        self._ks = [float(v) for v in k_hist[-2:]]
        # a sample of block j gets a key ramping from that of block j-2 to j-1 (both complete)
        k = ramped_controls(k_hist, pos0, n, block)
        out = (x + k[None, :] * (lifted - x)).astype(np.float32)
        return out if audio.ndim == 2 else out[0]

    def _block_keys(self, sums: np.ndarray, block: int, sr: int) -> np.ndarray:
        """The lift's share (0..1) per completed block, from the blocks' band energies."""
        a_sm = math.exp(-block / (sr * self.smooth_ms / 1000.0))
        smoothed = np.empty_like(sums)
        level = self._smooth
        for i in range(sums.shape[1]):  # one-pole smoothing of both band powers: serial
            level = a_sm * level + (1.0 - a_sm) * sums[:, i]
            smoothed[:, i] = level
        self._smooth = level
        p_sib, p_voice = smoothed
        ratio_db = 10.0 * np.log10(np.maximum(p_sib, 1e-20) / np.maximum(p_voice, 1e-20))
        wanted = np.clip((self.ess_db - ratio_db) / (self.ess_db - self.voiced_db), 0.0, 1.0)
        a_rel = math.exp(-block / (sr * self.release_ms / 1000.0))
        k = self._k
        out = np.empty(wanted.size)
        for i, w in enumerate(wanted.tolist()):  # fall at once, rise over release_ms: inherently serial
            k = w if w < k else a_rel * k + (1.0 - a_rel) * w
            out[i] = k
        self._k = k
        return out


def keyed_bands(bands: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split tonal EQ bands into the static ones and the :data:`KEYED_PEAK` ones.

    >>> keyed_bands([{"type": "peak", "freq_hz": 1e3, "gain_db": 1, "q": 1},
    ...              {"type": "keyed_peak", "freq_hz": 4.4e3, "gain_db": 4.5, "q": 0.6}])[1][0]["freq_hz"]
    4400.0
    """
    static = [b for b in bands if b["type"] != KEYED_PEAK]
    return static, [b for b in bands if b["type"] == KEYED_PEAK]
