"""Oracle ceilings of the learned denoiser's family, and the lag of any output, on the denoiser benchmark.

The oracles know the clean voice ``v`` and the noise ``x - v``; they say what a method of a given
shape could reach at best, in the same framing as :mod:`melisma.render.learned_denoise` (20 ms
sqrt-Hann frames, 10 ms hop, 48 kHz, the gains floored at -30 dB):

* ``oracle:band32``: the ideal gain of each of the model's 32 bands, sqrt(P_voice / P_mix) clipped
  to 1 (RNNoise's training target; what the current model can at best reach);
* ``oracle:band64``: the same with 64 bands on the same mel scale;
* ``oracle:bin``: the ideal ratio mask per FFT bin, sqrt(|V|^2 / (|V|^2 + |N|^2));
* ``oracle:ls32``: the least-squares band gains (what minimises each band's error energy, the Wiener
  gain, P_voice / P_mix for uncorrelated noise, under the square root of RNNoise's target);
* ``oracle:ls32+comb``: least-squares band gains with each band's best comb depth (0, 0.2, ... 1;
  :func:`melisma.render.learned_denoise.comb_gains_to_bins` on the noisy frame's own f0 pick): the
  ceiling of the model's shape since it outputs comb depths;
* ``oracle:band32+wiener``: the ideal band gains driving a per-bin decision-directed Wiener filter
  (:func:`melisma.render.learned_denoise.refine_gains`): the band gain says how much of the band is
  noise, the per-bin filter puts the noise between the harmonics.

``output_lag`` finds an output's lag against the clean voice by cross-correlation (positive: the
output is late), so the benchmark can show that every method is compared aligned.
"""

from __future__ import annotations

import math

import numpy as np
from melisma.render import learned_denoise as ld

FLOOR = 10.0 ** (-30.0 / 20.0)
_WIN = np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(ld.N_FFT) / ld.N_FFT))


def stft(x: np.ndarray) -> np.ndarray:
    """Frames (m, N_BINS) of ``x`` with the denoiser's framing (a hop of zeros in front, as the stage pads)."""
    pad = np.concatenate([np.zeros(ld.N_FFT - ld.HOP), np.asarray(x, np.float64), np.zeros(ld.N_FFT)])
    m = (pad.size - ld.N_FFT) // ld.HOP + 1
    frames = np.lib.stride_tricks.sliding_window_view(pad, ld.N_FFT)[:: ld.HOP][:m]
    return np.fft.rfft(frames * _WIN, axis=1)


def istft(spec: np.ndarray, n: int) -> np.ndarray:
    """Overlap-add of ``spec`` back to ``n`` samples aligned with the input of :func:`stft`."""
    blocks = np.fft.irfft(spec, n=ld.N_FFT, axis=1) * _WIN
    out = np.zeros((spec.shape[0] + 1) * ld.HOP)
    for i, b in enumerate(blocks):
        out[i * ld.HOP : i * ld.HOP + ld.N_FFT] += b
    return out[ld.N_FFT - ld.HOP : ld.N_FFT - ld.HOP + n].astype(np.float32)


def mel_weights(n_bands: int) -> np.ndarray:
    """(n_bands, N_BINS) triangles evenly spaced in mel from 0 Hz to 20 kHz (the model's, for 32)."""
    mel = np.linspace(0.0, 2595.0 * math.log10(1.0 + 20000.0 / 700.0), n_bands)
    c = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f = np.fft.rfftfreq(ld.N_FFT, 1.0 / ld.SR)
    w = np.zeros((n_bands, f.size))
    for b in range(n_bands):
        if b > 0:
            w[b] = np.where((f >= c[b - 1]) & (f <= c[b]), (f - c[b - 1]) / (c[b] - c[b - 1]), w[b])
        if b < n_bands - 1:
            w[b] = np.where((f >= c[b]) & (f < c[b + 1]), (c[b + 1] - f) / (c[b + 1] - c[b]), w[b])
        else:
            w[b] = np.where(f >= c[b], 1.0, w[b])
    return w


def ideal_band_gains(x: np.ndarray, v: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gains (m, bands), spectra of x): sqrt(P_voice / P_mix) per band, clipped to 1."""
    sx, sv = stft(x), stft(v)
    pv, px = (np.abs(sv) ** 2) @ weights.T, (np.abs(sx) ** 2) @ weights.T
    return np.minimum(np.sqrt(pv / (px + 1e-12)), 1.0), sx


def oracle_band(x: np.ndarray, v: np.ndarray, n_bands: int = 32) -> np.ndarray:
    """The ideal band gains applied as the stage applies them (triangles to the bins, -30 dB floor)."""
    w = mel_weights(n_bands)
    g, sx = ideal_band_gains(x, v, w)
    return istft(sx * np.maximum(g @ w, FLOOR), x.size)


def oracle_bin(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The ideal ratio mask per FFT bin."""
    sx, sv = stft(x), stft(v)
    sn = sx - sv
    irm = np.sqrt(np.abs(sv) ** 2 / (np.abs(sv) ** 2 + np.abs(sn) ** 2 + 1e-12))
    return istft(sx * np.maximum(irm, FLOOR), x.size)


def oracle_ls_comb(x: np.ndarray, v: np.ndarray, *, comb: bool = True) -> np.ndarray:
    """Least-squares band gains with the best comb depth per band and frame (a grid), as the stage applies them."""
    w = ld._WEIGHTS.astype(np.float64)
    sx, sv = stft(x), stft(v)
    _, f0 = ld.harmonic_analysis(ld.frame_power(sx.astype(np.complex64)))
    u = 1.0 - ld.comb_shape(f0).astype(np.float64)
    best = (np.full((sx.shape[0], ld.N_BANDS), np.inf), np.zeros((sx.shape[0], ld.N_BANDS)), np.zeros((sx.shape[0], ld.N_BANDS)))
    for c in np.linspace(0.0, 1.0, 6) if comb else [0.0]:
        m = 1.0 - c * u
        num = np.real(m * sx * np.conj(sv)) @ w.T
        den = (m**2 * np.abs(sx) ** 2) @ w.T + 1e-12
        g = np.clip(num / den, 0.0, 1.0)
        err = (np.abs(sv) ** 2) @ w.T - 2.0 * g * num + g**2 * den
        better = err < best[0]
        best[0][better], best[1][better], best[2][better] = err[better], g[better], c
    gains = ld.comb_gains_to_bins(best[1].astype(np.float32), best[2].astype(np.float32), f0)
    return istft(sx * np.maximum(gains, FLOOR), x.size)


def oracle_band_wiener(x: np.ndarray, v: np.ndarray, **kw) -> np.ndarray:
    """The ideal 32-band gains driving the per-bin decision-directed Wiener refinement."""
    w = mel_weights(ld.N_BANDS)
    g, sx = ideal_band_gains(x, v, w)
    power = ld.frame_power(sx.astype(np.complex64))
    gb = ld.refine_gains(power, g.astype(np.float32), ld.RefineState(), **kw)
    return istft(sx * np.maximum(gb, FLOOR), x.size)


def output_lag(y: np.ndarray, v: np.ndarray, sr: int = ld.SR, max_lag: int = 2400) -> int:
    """Lag (samples) of ``y`` against ``v`` by cross-correlation, within +-max_lag; positive: ``y`` is late."""
    from scipy import signal

    n = min(v.size, y.size, 10 * sr)
    a, b = np.asarray(y[:n], np.float64), np.asarray(v[:n], np.float64)
    c = signal.correlate(a, b, mode="full", method="fft")
    mid = n - 1
    return int(np.argmax(c[mid - max_lag : mid + max_lag + 1]) - max_lag)
