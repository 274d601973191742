"""Bandwidth extension: the top octave a phone removed, rebuilt from the voice's own harmonics.

A phone microphone and its codec cut a take at about 7-8 kHz; a studio vocal carries its
harmonics and breath up to 16 kHz and beyond. :class:`BandwidthExtender` generates the missing
8-16 kHz band from a nonlinearity of the 4-8 kHz band (a full-wave rectifier: the sum
frequencies of the harmonics there land an octave up, on the voice's own harmonic series),
shapes it to a falling slope, and adds only what is missing: per 5 ms block, the generated band
is scaled so that the take's 8-16 kHz band (what it has plus what is added) reaches
``target_db`` against its 2-5 kHz band (which a phone keeps), the level studio vocals hold there. A take that already has
its top octave gets little or nothing.

It adds nothing where it would not sound like a voice:

* on sibilance and breath noise (the 4-8 kHz band within ``voicing_db`` of the 0.2-3 kHz band:
  an ess, a breath, broadband noise), so esses do not gain a new, harsher top;
* on silence and low-level hiss (the 0.2-3 kHz band below ``floor_dbfs``).

The gain is computed per block from past blocks only and ramped per sample, as the de-esser's,
so streaming with ``reset=False`` gives exactly what one call gives. Levels measured on studio
and phone-degraded vocals: ``tools/bench_restore.py`` (air) and ``firmware/docs/restore.md``.

Examples
--------
>>> import numpy as np
>>> from scipy import signal
>>> sr = 48000
>>> t = np.arange(sr) / sr
>>> voice = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 32)).astype(np.float32)  # to 6.8 kHz
>>> phone = signal.sosfilt(signal.butter(8, 7000, fs=sr, output="sos"), voice).astype(np.float32)
>>> top = lambda y: float(np.sum(np.abs(np.fft.rfft(y[sr // 2:]))[4000:8000] ** 2))  # 8-16 kHz
>>> y = BandwidthExtender()(0.1 * phone, sr)
>>> bool(top(y) > 100 * top(0.1 * phone))
True
>>> bool(np.array_equal(BandwidthExtender()(np.zeros(4800, np.float32), sr), np.zeros(4800, np.float32)))
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

#: Below this sample rate there is no 8-16 kHz band to restore (Nyquist under 16 kHz).
MIN_SR = 32000
#: The 8.5-16 kHz band's level against the 2-5 kHz band on voiced frames, as studio vocals hold it
#: (median over the five studio vocals of tools/bench_restore.py: -20.7, -25.7, -9.6, -21.1, -40.4 dB).
TARGET_DB = -21.0
#: ... and at most this far under the 4-8 kHz band (the studio vocals' median: -11 dB).
SOURCE_DB = -11.0


def _sos(kind: str, freq: Any, sr: int, order: int) -> np.ndarray:
    # designed once and kept beside the plan (dsp.design): a re-render never imports scipy.signal
    return dsp.design("butter", order, freq, kind, sr, "sos")


@dataclass
class BandwidthExtender(Stage):
    """Add an 8-16 kHz band made from the 4-8 kHz band, on voiced frames, up to a studio-like level.

    Parameters
    ----------
    target_db : float
        Level of the 8-16 kHz band (present plus added) against the 2-5 kHz band, in dB.
    source_db : float
        ... and at most this level against the 4-8 kHz band (a dark voice keeps a dark top).
    voicing_db : float
        The 0.2-3 kHz band must lie this far above the 4-8 kHz band for a block to count as
        voiced (an ess or noise does not).
    floor_dbfs : float
        Blocks whose 0.2-3 kHz band is below this level get nothing (silence, hiss).
    max_gain_db : float
        Most gain applied to the generated band.
    block_ms, release_ms : float
        Block of the level detector; smoothing of the gain (attack is one block).
    """

    target_db: float = TARGET_DB
    source_db: float = SOURCE_DB
    voicing_db: float = 12.0
    floor_dbfs: float = -60.0
    max_gain_db: float = 24.0
    block_ms: float = 5.0
    release_ms: float = 40.0
    _design_key: Any = field(default=None, init=False, repr=False)
    _filters: Any = field(default=None, init=False, repr=False)
    _zi: Any = field(default=None, init=False, repr=False)
    _acc: Any = field(default=None, init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)
    _gain: float = field(default=0.0, init=False, repr=False)
    _gains: list = field(default_factory=lambda: [0.0, 0.0], init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.block_ms > 0 and self.release_ms > 0 and self.max_gain_db >= 0):
            raise RenderError(f"BandwidthExtender: need block_ms > 0, release_ms > 0 and max_gain_db >= 0, got "
                              f"block_ms={self.block_ms}, release_ms={self.release_ms}, max_gain_db={self.max_gain_db}")
        if not -40.0 <= self.target_db <= 0.0:
            raise RenderError(f"BandwidthExtender: target_db={self.target_db} is out of range; use -40..0 dB "
                              f"(studio vocals: about {TARGET_DB:g})")

    def reset(self) -> None:
        self._zi = None
        self._acc = np.zeros(5)
        self._pos = 0
        self._gain = 0.0
        self._gains = [0.0, 0.0]

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "target_db": self.target_db, "voicing_db": self.voicing_db,
                "floor_dbfs": self.floor_dbfs, "max_gain_db": self.max_gain_db, "source_hz": [4000.0, 8000.0],
                "band_hz": [8000.0, 16000.0]}

    def _design(self, sr: int) -> dict[str, np.ndarray]:
        if sr < MIN_SR:
            raise RenderError(f"BandwidthExtender: sr={sr} has no 8-16 kHz band; it needs sr >= {MIN_SR}")
        if self._design_key != sr:
            top = min(16000.0, 0.45 * sr)
            self._filters = {
                "source": _sos("bandpass", [4000.0, 8000.0], sr, 4),
                # the rectified source, high-passed to the band and tilted (first-order low-pass):
                # the generated band falls with frequency, as a voice's harmonics do
                "shape": np.concatenate([_sos("highpass", 8000.0, sr, 8), _sos("lowpass", top, sr, 4),
                                         _sos("lowpass", 9000.0, sr, 1)]),
                "present": _sos("bandpass", [8500.0, top], sr, 4),
                "voice": _sos("bandpass", [200.0, 3000.0], sr, 2),
                "presence": _sos("bandpass", [2000.0, 5000.0], sr, 2),
            }
            self._design_key = sr
            self._zi = None
        return self._filters

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        filters = self._design(sr)
        x = audio if audio.ndim == 2 else audio[None, :]
        n = x.shape[1]
        if n == 0:
            return audio
        if self._acc is None:
            self.reset()
        mono = x.mean(axis=0) if x.shape[0] > 1 else x[0]
        if self._zi is None:
            self._zi = {k: np.zeros((s.shape[0], 2)) for k, s in filters.items()}
            self._zi["shape"] = np.zeros((filters["shape"].shape[0], 2))
        src, self._zi["source"] = dsp.sosfilt(filters["source"], mono, self._zi["source"])
        gen, self._zi["shape"] = dsp.sosfilt(filters["shape"], np.abs(src), self._zi["shape"])
        present, self._zi["present"] = dsp.sosfilt(filters["present"], mono, self._zi["present"])
        voice, self._zi["voice"] = dsp.sosfilt(filters["voice"], mono, self._zi["voice"])
        presence, self._zi["presence"] = dsp.sosfilt(filters["presence"], mono, self._zi["presence"])

        block = max(1, int(round(sr * self.block_ms / 1000.0)))
        pos0 = self._pos
        powers = np.stack([src * src, gen * gen, present * present, voice * voice, presence * presence])  # (5, n)
        sums, self._acc, self._pos = block_sums(powers, block, self._acc, pos0)
        block_gains = self._block_gains(sums / block, block, sr) if sums is not None else np.zeros(0)
        g_hist = np.concatenate((self._gains, block_gains))
        self._gains = [float(v) for v in g_hist[-2:]]
        if not np.any(g_hist):
            return audio  # nothing to add in this call
        # a sample of block k gets a gain ramping from that of block k-2 to k-1
        gain = ramped_controls(g_hist, pos0, n, block)
        added = (gain * gen).astype(np.float32)
        out = x + added[None, :]
        return out if audio.ndim == 2 else out[0]

    def _block_gains(self, levels: np.ndarray, block: int, sr: int) -> np.ndarray:
        """Linear gains for the generated band, one per completed block, from the blocks' mean powers."""
        p_src, p_gen, p_present, p_voice, p_presence = levels
        tiny = 1e-20
        voiced = (p_voice > 10 ** (self.floor_dbfs / 10)) & (p_voice > p_src * 10 ** (self.voicing_db / 10))
        # the level the band should have: from the 2-5 kHz band, but never more than the octave
        # below it warrants (a dark voice keeps a dark top)
        target = np.minimum(p_presence * 10 ** (self.target_db / 10), p_src * 10 ** (self.source_db / 10))
        needed = np.maximum(0.0, target - p_present)
        wanted = np.where(voiced & (p_gen > tiny), np.sqrt(needed / np.maximum(p_gen, tiny)), 0.0)
        wanted = np.minimum(wanted, 10 ** (self.max_gain_db / 20))
        # one block to rise, release_ms to fall: an ess right after a vowel is not given the vowel's top
        a_rel = math.exp(-block / (sr * self.release_ms / 1000.0))
        g = self._gain
        out = np.empty(wanted.size)
        for i, w in enumerate(wanted.tolist()):  # attack/release recursion: inherently serial
            g = w if w > g else a_rel * g + (1 - a_rel) * w
            g = 0.0 if g < 1e-6 else g
            out[i] = g
        self._gain = g
        return out


def build_bandwidth_extension(voice: dict[str, Any] | None, *, sr: int) -> tuple[Stage | None, dict[str, Any]]:
    """The bandwidth-extension stage for a take, and its explanation for the mix report.

    ``voice`` is :func:`melisma.analysis.voice.analyze_voice` of the take (its ``air`` band,
    8-16 kHz, against the ``presence`` band, says how dull the take is). Below :data:`MIN_SR`
    there is nothing to restore and the stage is None.

    >>> stage, why = build_bandwidth_extension({}, sr=48000)
    >>> type(stage).__name__, why["stage"]
    ('BandwidthExtender', 'bandwidth')
    """
    if sr < MIN_SR:
        return None, {"stage": "bandwidth", "enabled": False, "why": f"sample rate {sr} Hz has no 8-16 kHz band"}
    balance = (voice or {}).get("spectral_balance") or {}
    stage = BandwidthExtender()
    air, presence = balance.get("air"), balance.get("presence")
    dull = (f"the take's 8-16 kHz band sits {air - presence:+.0f} dB against its 2-5 kHz band; "
            if air is not None and presence is not None else "")
    return stage, {"stage": "bandwidth", "source_hz": [4000, 8000], "band_hz": [8000, 16000],
                   "target_db": stage.target_db,
                   "why": dull + "the top octave a phone cuts is rebuilt from the voice's own 4-8 kHz harmonics, up to "
                          f"{-stage.target_db:.0f} dB below the 2-5 kHz band as studio vocals have it, only on sung sounds "
                          "(not on esses, breaths or noise), and only what the take lacks"}
