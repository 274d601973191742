"""Small shared helpers: seeded generators, smooth random curves, coloured noise."""

from __future__ import annotations

import zlib

import numpy as np


class CorpusError(ValueError):
    """A corpus parameter is out of range or inconsistent (the message says what would work)."""


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys``, so adding one random draw in one
    place does not change every other draw (keeps scenarios stable as the generator evolves)."""
    words = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(words)


def smooth_noise(n: int, *, rate_hz: float, sr: float, rng: np.random.Generator) -> np.ndarray:
    """Random curve of ``n`` samples (knots ~ N(0, 1)) whose content stays below about ``rate_hz``.

    Random values on a grid at ``2 * rate_hz`` joined by cubic (smoothstep) interpolation.
    """
    if n <= 0:
        return np.zeros(0)
    step = max(1.0, sr / (2.0 * rate_hz))
    knots = int(np.ceil(n / step)) + 2
    values = rng.standard_normal(knots)
    pos = np.arange(n) / step
    i = np.floor(pos).astype(np.int64)
    frac = pos - i
    frac = frac * frac * (3.0 - 2.0 * frac)
    # not normalised by the sample std: on a short span that would blow a few similar knots up
    return values[i] * (1.0 - frac) + values[i + 1] * frac


def pink_noise(n: int, *, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise, unit RMS, by spectral shaping of white noise."""
    if n <= 0:
        return np.zeros(0, np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum /= np.sqrt(f)
    spectrum[0] = 0.0
    y = np.fft.irfft(spectrum, n)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-20)).astype(np.float32)


def bandpass_noise(n: int, *, sr: int, low_hz: float, high_hz: float, rng: np.random.Generator, order: int = 4) -> np.ndarray:
    """White noise band-passed to ``[low_hz, high_hz]`` (clamped below Nyquist), unit RMS."""
    from scipy.signal import butter, sosfilt

    if n <= 0:
        return np.zeros(0, np.float32)
    nyq = sr / 2.0
    high = min(high_hz, 0.95 * nyq)
    low = min(low_hz, 0.5 * high)
    sos = butter(order, [low / nyq, high / nyq], btype="bandpass", output="sos")
    y = sosfilt(sos, rng.standard_normal(n))
    return (y / (np.sqrt(np.mean(y**2)) + 1e-20)).astype(np.float32)


def rms(y: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean(y**2))) if y.size else 0.0


def db(x: float, floor: float = -200.0) -> float:
    return float(20.0 * np.log10(x)) if x > 0 else floor


def shape_curve(u: np.ndarray, shape: str) -> np.ndarray:
    """Map ``u`` in [0, 1] (clipped) to a transition 0 -> 1: 'linear' or 'sigmoid' (logistic)."""
    u = np.clip(u, 0.0, 1.0)
    if shape == "linear":
        return u
    if shape == "sigmoid":
        k = 10.0
        lo, hi = 1.0 / (1.0 + np.exp(k * 0.5)), 1.0 / (1.0 + np.exp(-k * 0.5))
        return (1.0 / (1.0 + np.exp(-k * (u - 0.5))) - lo) / (hi - lo)
    raise CorpusError(f"shape={shape!r}: use 'sigmoid' or 'linear'")


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def hz_to_midi(hz: np.ndarray | float) -> np.ndarray | float:
    return 69.0 + 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0)
