"""The few filter designs and windows the engine needs, in numpy alone, bit for bit as scipy makes them.

Importing :mod:`scipy.signal` pulls in :mod:`scipy.stats`, :mod:`scipy.interpolate` and
:mod:`scipy.optimize`: about 50 MB of resident memory (measured: 46 -> 94 MB over numpy and
scipy.fft) and a second of CPU, a fifth of what a Pi Zero 2 W can give the whole one-click mix.
The engine uses only Butterworth designs (``"ba"`` and ``"sos"``), notch filters, ``tf2sos``,
one Kaiser-window FIR low-pass and Hann windows, so this module carries exactly those: the
arithmetic of SciPy 1.17's ``scipy.signal`` (``buttap``, ``lp2lp_zpk``, ``lp2hp_zpk``,
``lp2bp_zpk``, ``bilinear_zpk``, ``zpk2tf``, ``zpk2sos``, ``tf2zpk``, ``iirnotch``, ``firwin``,
``get_window``), line for line with the array-API layer taken out. ``tests/melisma/test_filter_design.py``
checks every function against :mod:`scipy.signal` itself, bit for bit, over a grid of orders,
band types, frequencies and rates, so a scipy that changes its arithmetic is noticed.

Derived from SciPy (https://scipy.org), Copyright (c) 2001-2002 Enthought, Inc. 2003, SciPy
Developers; BSD 3-clause licence (the licence text ships with scipy, a dependency).

Examples
--------
>>> sos = butter(2, [300.0, 3000.0], "bandpass", fs=48000, output="sos")
>>> sos.shape
(2, 6)
>>> b, a = iirnotch(50.0, 30.0, fs=48000)
>>> round(float(sum(b) / sum(a)), 6)  # unity gain at DC
1.0
>>> hann(4).tolist()  # periodic, as get_window('hann', 4) gives it
[0.0, 0.5, 1.0, 0.5]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def buttap(order: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Analog Butterworth low-pass prototype ``(z, p, k)`` of ``order``."""
    if abs(int(order)) != order:
        raise ValueError(f"filter order must be a non-negative integer, got {order!r}")
    z = np.asarray([], dtype=np.float64)
    m = np.arange(-order + 1, order, 2, dtype=np.float64)
    p = -np.exp(1j * np.pi * m / (2 * order))  # the middle value is 0: an exactly real pole
    return z, p, 1.0


def _relative_degree(z: np.ndarray, p: np.ndarray) -> int:
    degree = p.shape[0] - z.shape[0]
    if degree < 0:
        raise ValueError("improper transfer function: it needs at least as many poles as zeros")
    return degree


def lp2lp_zpk(z: np.ndarray, p: np.ndarray, k: float, wo: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """A low-pass prototype moved to cutoff ``wo`` (rad/s)."""
    z, p = np.atleast_1d(z), np.atleast_1d(p)
    wo = float(wo)
    degree = _relative_degree(z, p)
    return wo * z, wo * p, k * wo**degree


def lp2hp_zpk(z: np.ndarray, p: np.ndarray, k: float, wo: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """A low-pass prototype turned into a high-pass at ``wo`` (rad/s)."""
    z, p = np.atleast_1d(z), np.atleast_1d(p)
    wo = float(wo)
    degree = _relative_degree(z, p)
    z_hp = np.concatenate((wo / z, np.zeros(degree)))
    k_hp = k * np.real(np.prod(-z) / np.prod(-p))
    return z_hp, wo / p, k_hp


def lp2bp_zpk(z: np.ndarray, p: np.ndarray, k: float, wo: float = 1.0,
              bw: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """A low-pass prototype turned into a band-pass around ``wo`` of width ``bw`` (rad/s)."""
    z, p = np.atleast_1d(z), np.atleast_1d(p)
    if not np.issubdtype(z.dtype, np.inexact):
        z = z.astype(np.float64)
    z, p = z.astype(np.result_type(z, p)), p.astype(np.result_type(z, p))
    wo, bw = float(wo), float(bw)
    degree = _relative_degree(z, p)
    z_lp = (z * bw / 2).astype(np.complex128)  # the square root must come out complex, not NaN
    p_lp = (p * bw / 2).astype(np.complex128)
    z_bp = np.concatenate((z_lp + np.sqrt(z_lp**2 - wo**2), z_lp - np.sqrt(z_lp**2 - wo**2)))
    p_bp = np.concatenate((p_lp + np.sqrt(p_lp**2 - wo**2), p_lp - np.sqrt(p_lp**2 - wo**2)))
    z_bp = np.concatenate((z_bp, np.zeros(degree)))
    return z_bp, p_bp, k * bw**degree


def bilinear_zpk(z: np.ndarray, p: np.ndarray, k: float, fs: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The digital equivalent (bilinear transform at ``fs``) of an analog ``(z, p, k)``."""
    z, p = np.atleast_1d(z), np.atleast_1d(p)
    degree = _relative_degree(z, p)
    fs2 = 2.0 * fs
    z_z = np.concatenate(((fs2 + z) / (fs2 - z), -np.ones(degree)))  # zeros at infinity go to Nyquist
    p_z = (fs2 + p) / (fs2 - p)
    k_z = k * np.real(np.prod(fs2 - z) / np.prod(fs2 - p))
    return z_z, p_z, k_z


def _poly(zeros: np.ndarray) -> np.ndarray:
    """The monic polynomial with these roots (scipy's 1-D ``poly``, which is numpy's)."""
    zeros = np.atleast_1d(np.asarray(zeros))
    if zeros.shape[0] == 0:
        return np.asarray(1.0, dtype=np.real(zeros).dtype)
    a = np.ones((1,), dtype=zeros.dtype)
    one = np.ones_like(zeros[0])
    for zero in zeros:
        a = np.convolve(a, np.stack((one, -zero)), mode="full")
    if np.iscomplexobj(a):
        roots = np.asarray(zeros, dtype=np.complex128)
        if np.all(np.sort(np.imag(roots)) == np.sort(np.imag(np.conj(roots)))):
            a = np.real(a).copy()  # complex roots in conjugate pairs: the polynomial is real
    return a


def zpk2tf(z: Any, p: Any, k: Any) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator polynomials of ``(z, p, k)`` (1-D ``z``)."""
    z, p = np.asarray(z), np.asarray(p)
    k = np.asarray(k, dtype=np.result_type(np.real(z), np.real(p), k))
    if np.issubdtype(k.dtype, np.integer):
        k = k.astype(np.float64)
    z, k = np.atleast_1d(z), np.atleast_1d(k)
    b = np.multiply(k, _poly(z))
    a = np.atleast_1d(np.asarray(_poly(p)))
    return b, a


def _cplxreal(z: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.atleast_1d(z)
    if z.size == 0:
        return z, z
    tol = 100 * np.finfo((1.0 * z).dtype).eps
    z = z[np.lexsort((abs(z.imag), z.real))]
    real_indices = abs(z.imag) <= tol * abs(z)
    zr = z[real_indices].real
    if len(zr) == len(z):
        return np.array([]), zr
    z = z[~real_indices]
    zp, zn = z[z.imag > 0], z[z.imag < 0]
    if len(zp) != len(zn):
        raise ValueError("array contains a complex value with no matching conjugate")
    same_real = np.diff(zp.real) <= tol * abs(zp[:-1])
    diffs = np.diff(np.concatenate(([0], same_real, [0])))
    run_starts, run_stops = np.nonzero(diffs > 0)[0], np.nonzero(diffs < 0)[0]
    for i in range(len(run_starts)):
        start, stop = run_starts[i], run_stops[i] + 1
        for chunk in (zp[start:stop], zn[start:stop]):
            chunk[...] = chunk[np.lexsort([abs(chunk.imag)])]
    if any(abs(zp - zn.conj()) > tol * abs(zn)):
        raise ValueError("array contains a complex value with no matching conjugate")
    return (zp + zn.conj()) / 2, zr


def _nearest_real_complex_idx(fro: np.ndarray, to: Any, which: str) -> int:
    order = np.argsort(np.abs(fro - to))
    if which == "any":
        return int(order[0])
    mask = np.isreal(fro[order])
    if which == "complex":
        mask = ~mask
    return int(order[np.nonzero(mask)[0][0]])


def _single_zpksos(z: list, p: list, k: float) -> np.ndarray:
    sos = np.zeros(6)
    b, a = zpk2tf(z, p, k)
    sos[3 - len(b) : 3] = b
    sos[6 - len(a) : 6] = a
    return sos


def zpk2sos(z: Any, p: Any, k: Any) -> np.ndarray:
    """Second-order sections of a digital ``(z, p, k)`` (scipy's ``pairing='nearest'``)."""
    z, p, k = np.asarray(z), np.asarray(p), np.asarray(k)
    if len(z) == len(p) == 0:
        return np.asarray([[k, 0.0, 0.0, 1.0, 0.0, 0.0]])
    p = np.concatenate((p, np.zeros(max(len(z) - len(p), 0))))
    z = np.concatenate((z, np.zeros(max(len(p) - len(z), 0))))
    n_sections = (max(len(p), len(z)) + 1) // 2
    if len(p) % 2 == 1:
        p = np.concatenate((p, [0.0]))
        z = np.concatenate((z, [0.0]))
    z = np.concatenate(_cplxreal(z))
    p = np.concatenate(_cplxreal(p))
    if not np.isreal(k):
        raise ValueError("k must be real")
    k = k.real

    def idx_worst(q: np.ndarray) -> int:  # digital: the pole closest to the unit circle
        return int(np.argmin(np.abs(1 - np.abs(q))))

    sos = np.zeros((n_sections, 6))
    for si in range(n_sections - 1, -1, -1):  # the "worst" sections last
        p1_idx = idx_worst(p)
        p1 = p[p1_idx]
        p = np.delete(p, p1_idx)
        if np.isreal(p1) and np.isreal(p).sum() == 0:  # the last real pole
            z1_idx = _nearest_real_complex_idx(z, p1, "real")
            z1 = z[z1_idx]
            z = np.delete(z, z1_idx)
            sos[si] = _single_zpksos([z1, 0], [p1, 0], 1)
        elif len(p) + 1 == len(z) and not np.isreal(p1) and np.isreal(p).sum() == 1 and np.isreal(z).sum() == 1:
            z1_idx = _nearest_real_complex_idx(z, p1, "complex")  # must pair with a complex zero
            z1 = z[z1_idx]
            z = np.delete(z, z1_idx)
            sos[si] = _single_zpksos([z1, z1.conj()], [p1, p1.conj()], 1)
        else:
            if np.isreal(p1):
                prealidx = np.flatnonzero(np.isreal(p))
                p2_idx = prealidx[idx_worst(p[prealidx])]
                p2 = p[p2_idx]
                p = np.delete(p, p2_idx)
            else:
                p2 = p1.conj()
            if len(z) > 0:
                z1_idx = _nearest_real_complex_idx(z, p1, "any")
                z1 = z[z1_idx]
                z = np.delete(z, z1_idx)
                if not np.isreal(z1):
                    sos[si] = _single_zpksos([z1, z1.conj()], [p1, p2], 1)
                elif len(z) > 0:
                    z2_idx = _nearest_real_complex_idx(z, p1, "real")
                    z2 = z[z2_idx]
                    z = np.delete(z, z2_idx)
                    sos[si] = _single_zpksos([z1, z2], [p1, p2], 1)
                else:
                    sos[si] = _single_zpksos([z1], [p1, p2], 1)
            else:
                sos[si] = _single_zpksos([], [p1, p2], 1)
    sos[0][:3] *= k  # the gain goes into the first section
    return sos


def butter(order: int, freq_hz: Any, btype: str = "lowpass", *, fs: float, output: str = "ba") -> Any:
    """Digital Butterworth filter: ``scipy.signal.butter(order, freq_hz, btype, fs=fs, output=output)``.

    ``btype`` is ``"lowpass"``, ``"highpass"`` or ``"bandpass"`` (``freq_hz`` then ``[low, high]``);
    ``output`` is ``"ba"`` (returns ``(b, a)``), ``"sos"`` or ``"zpk"``.
    """
    aliases = {"low": "lowpass", "high": "highpass", "band": "bandpass", "lp": "lowpass", "hp": "highpass", "bp": "bandpass"}
    btype = aliases.get(btype, btype)
    wn = np.asarray(freq_hz)
    if wn.size > 1 and not wn[0] < wn[1]:
        raise ValueError(f"band edges {freq_hz!r} must be increasing")
    wn = 2 * wn / fs
    z, p, k = buttap(order)
    if np.any(wn <= 0) or np.any(wn >= 1):
        raise ValueError(f"digital filter critical frequencies must be 0 < freq < fs/2 (fs={fs} -> fs/2={fs / 2}), "
                         f"got {freq_hz!r}")
    warped = 2 * 2.0 * np.tan(np.pi * wn / 2.0)
    if btype in ("lowpass", "highpass"):
        if wn.size != 1:
            raise ValueError(f"a {btype} filter takes one frequency, got {freq_hz!r}")
        z, p, k = (lp2lp_zpk if btype == "lowpass" else lp2hp_zpk)(z, p, k, wo=warped)
    elif btype == "bandpass":
        if wn.size != 2:
            raise ValueError(f"a bandpass filter takes [low, high], got {freq_hz!r}")
        z, p, k = lp2bp_zpk(z, p, k, wo=np.sqrt(warped[0] * warped[1]), bw=warped[1] - warped[0])
    else:
        raise ValueError(f"btype {btype!r} is not supported here; use 'lowpass', 'highpass' or 'bandpass'")
    z, p, k = bilinear_zpk(z, p, k, fs=2.0)
    if output == "zpk":
        return z, p, k
    if output == "ba":
        return zpk2tf(z, p, k)
    if output == "sos":
        return zpk2sos(z, p, k)
    raise ValueError(f"output {output!r} is not supported; use 'ba', 'sos' or 'zpk'")


def _normalize(b: Any, a: Any) -> tuple[np.ndarray, np.ndarray]:
    den = np.atleast_1d(np.asarray(a))
    num = np.atleast_1d(np.asarray(b))
    if den.ndim != 1 or num.ndim != 1:
        raise ValueError("b and a must be 1-D here")
    if np.all(den == 0):
        raise ValueError("the denominator must have at least one non-zero coefficient")
    den = np.trim_zeros(den, "f")
    num, den = num / den[0], den / den[0]
    leading = 0
    for value in num:
        if abs(value) <= 1e-14:
            leading += 1
        else:
            break
    if leading:
        num = num[min(leading, num.shape[0] - 1) :]
    return num, den


def tf2zpk(b: Any, a: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """Zeros, poles and gain of a transfer function ``b / a``."""
    b, a = _normalize(b, a)
    dtype = np.result_type(a, b, np.float64)
    a, b = a.astype(dtype), b.astype(dtype)
    k = b[0]
    b = b / b[0]
    z = np.roots(b) if b.shape[0] >= 2 else np.asarray([], dtype=b.dtype)
    p = np.roots(a) if a.shape[0] >= 2 else np.asarray([], dtype=a.dtype)
    return z, p, k


def tf2sos(b: Any, a: Any) -> np.ndarray:
    """Second-order sections of a digital transfer function ``b / a``."""
    return zpk2sos(*tf2zpk(b, a))


def iirnotch(freq_hz: float, q: float, *, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Second-order notch at ``freq_hz`` with quality factor ``q``: ``(b, a)``."""
    w0 = 2 * float(freq_hz) / fs
    q = float(q)
    if w0 > 1.0 or w0 < 0.0:
        raise ValueError(f"notch frequency {freq_hz} Hz must lie in 0..fs/2 ({fs / 2} Hz)")
    bw = w0 / q * np.pi
    w0 = w0 * np.pi
    beta = math.tan(bw / 2.0)
    gain = 1.0 / (1.0 + beta)
    b = gain * np.asarray([1.0, -2.0 * math.cos(w0), 1.0])
    a = np.asarray([1.0, -2.0 * gain * math.cos(w0), (2.0 * gain - 1.0)])
    return b, a


def _general_cosine(n: int, coefficients: list[float], sym: bool) -> np.ndarray:
    if int(n) != n or n < 0:
        raise ValueError(f"window length must be a non-negative integer, got {n!r}")
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    m = n if sym else n + 1
    fac = np.linspace(-np.pi, np.pi, m, dtype=np.float64)
    w = np.zeros(m, dtype=np.float64)
    for k, a in enumerate(np.asarray(coefficients, dtype=np.float64)):
        w += a * np.cos(k * fac)
    return w if sym else w[:-1]


def hann(n: int, *, sym: bool = False) -> np.ndarray:
    """Hann window; periodic by default, as ``scipy.signal.get_window("hann", n)`` gives it."""
    return _general_cosine(n, [0.5, 0.5], sym)


def kaiser(n: int, beta: float, *, sym: bool = True) -> np.ndarray:
    """Kaiser window (``scipy.signal.windows.kaiser``)."""
    from scipy import special  # ~0 MB once scipy.fft is loaded; not scipy.signal

    if int(n) != n or n < 0:
        raise ValueError(f"window length must be a non-negative integer, got {n!r}")
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    m = n if sym else n + 1
    k = np.arange(0, m, dtype=np.float64)
    alpha = (m - 1) / 2.0
    w = special.i0(beta * np.sqrt(1 - ((k - alpha) / alpha) ** 2.0)) / special.i0(np.asarray(beta, dtype=np.float64))
    return w if sym else w[:-1]


def firwin_lowpass(numtaps: int, cutoff: float, *, kaiser_beta: float) -> np.ndarray:
    """Windowed-sinc low-pass FIR: ``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", kaiser_beta))``,
    ``cutoff`` relative to Nyquist.
    """
    if not 0 < cutoff < 1:
        raise ValueError(f"cutoff {cutoff!r} must lie strictly between 0 and 1 (Nyquist)")
    bands = np.concatenate((np.zeros(1), np.atleast_1d(np.asarray(cutoff, dtype=np.float64)))).reshape(-1, 2)
    alpha = 0.5 * (numtaps - 1)
    m = np.arange(0, numtaps, dtype=np.float64) - alpha
    h: Any = 0
    for j in range(bands.shape[0]):
        left, right = bands[j, 0], bands[j, 1]
        h += right * np.sinc(right * m)
        h -= left * np.sinc(left * m)
    h *= kaiser(numtaps, kaiser_beta, sym=True)
    c = np.cos(np.pi * m * 0.0)  # a low-pass is scaled to unity gain at DC
    h /= np.sum(h * c)
    return h
