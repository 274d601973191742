"""Helpers on sung pitch contours shared by note segmentation and ornament analysis.

Pure functions of arrays (MIDI numbers per frame, ``NaN`` where unvoiced): voiced regions, gap
filling and smoothing, zig-zag turning points and periodic runs (vibrato, trills), the rate of a
near-sinusoidal swing, the two levels of a trill and the fit of a transition's shape. They live
here, below :mod:`~melisma.analysis.notes`, :mod:`~melisma.analysis.ornaments` and
:mod:`~melisma.analysis.ornament_model`, so that those import one way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "TRANSITION_DURATIONS_S", "PeriodicRun", "fill_gaps", "fit_transition", "periodic_runs", "shape_curve",
    "sine_rate", "smooth_midi", "trill_levels", "voiced_regions", "zigzag",
]


def voiced_regions(voiced: np.ndarray, *, bridge_frames: int = 0) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` frame ranges of voiced runs, bridging gaps of ``bridge_frames`` or fewer.

    >>> voiced_regions(np.array([0, 1, 1, 0, 1, 0, 0, 0, 1], bool), bridge_frames=1)
    [(1, 5), (8, 9)]
    """
    v = np.asarray(voiced, dtype=bool)
    if not v.any():
        return []
    edges = np.diff(np.r_[0, v.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    out: list[list[int]] = []
    for a, b in zip(starts, stops, strict=False):
        if out and a - out[-1][1] <= bridge_frames:
            out[-1][1] = int(b)
        else:
            out.append([int(a), int(b)])
    return [(a, b) for a, b in out]


def fill_gaps(midi: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN frames (inside a region); edges are held."""
    m = np.asarray(midi, dtype=np.float64).copy()
    ok = np.isfinite(m)
    if ok.all() or not ok.any():
        return m
    idx = np.arange(len(m))
    m[~ok] = np.interp(idx[~ok], idx[ok], m[ok])
    return m


def smooth_midi(midi: np.ndarray, *, frames: int) -> np.ndarray:
    """Centred moving average over ``frames`` (odd), shrinking at the edges instead of padding.

    >>> smooth_midi(np.array([0., 0., 3., 0., 0.]), frames=3).round(2).tolist()
    [0.0, 1.0, 1.0, 1.0, 0.0]
    """
    m = np.asarray(midi, dtype=np.float64)
    k = max(1, int(frames) | 1)
    if k == 1 or len(m) == 0:
        return m.copy()
    h = k // 2
    cs = np.r_[0.0, np.cumsum(m)]
    idx = np.arange(len(m))
    lo = np.maximum(idx - h, 0)
    hi = np.minimum(idx + h + 1, len(m))
    return (cs[hi] - cs[lo]) / (hi - lo)


def zigzag(d: np.ndarray, threshold: float) -> list[int]:
    """Indices of alternating turning points of ``d`` that each differ from the previous by ``threshold``."""
    n = len(d)
    if n < 3:
        return []
    ext: list[int] = []
    direction = 0
    lo_i = hi_i = 0
    vals = d.tolist()
    for i in range(1, n):
        v = vals[i]
        if direction == 0:
            if v > vals[hi_i]:
                hi_i = i
            if v < vals[lo_i]:
                lo_i = i
            if vals[hi_i] - vals[lo_i] >= threshold:
                if hi_i < lo_i:  # went down first: the high point is a turning point
                    ext.append(hi_i)
                    direction = -1
                else:
                    ext.append(lo_i)
                    direction = 1
        elif direction == 1:
            if v > vals[hi_i]:
                hi_i = i
            elif vals[hi_i] - v >= threshold:
                ext.append(hi_i)
                direction = -1
                lo_i = i
        else:
            if v < vals[lo_i]:
                lo_i = i
            elif v - vals[lo_i] >= threshold:
                ext.append(lo_i)
                direction = 1
                hi_i = i
    if direction == 1:
        ext.append(hi_i)
    elif direction == -1:
        ext.append(lo_i)
    return sorted(set(ext))


@dataclass
class PeriodicRun:
    """A run of alternating turning points spaced like an oscillation (a vibrato or trill candidate)."""

    i0: int  # first frame (inclusive, relative to the curve)
    i1: int  # last frame (exclusive)
    rate_hz: float
    extent_cents: float
    squareness: float
    first_level: float  # cents, level of the first turning point
    other_level: float
    n_extrema: int


def periodic_runs(d: np.ndarray, hop_s: float, *, min_swing: float, min_half_cycles: int,
                   fmin_hz: float = 4.0, fmax_hz: float = 12.0) -> list[PeriodicRun]:
    """Runs of oscillation in ``d`` (cents); see the module docstring."""
    if len(d) < 5:
        return []
    s = smooth_midi(d, frames=max(1, int(round(0.02 / hop_s)) | 1))
    turns = zigzag(s, min_swing)
    if len(turns) < min_half_cycles + 1:
        return []
    ext = np.asarray(turns)
    gaps = np.diff(ext) * hop_s
    swings = np.abs(np.diff(s[ext]))
    ok = (gaps >= 0.5 / fmax_hz * 0.75) & (gaps <= 0.5 / fmin_hz * 1.25) & (swings >= min_swing)
    runs = []
    k = 0
    while k < len(ok):
        if not ok[k]:
            k += 1
            continue
        j = k
        while j < len(ok) and ok[j]:
            j += 1
        # turning points ext[k] .. ext[j] bound j - k half cycles
        if j - k >= min_half_cycles:
            e = ext[k : j + 1]
            half = float(np.median(np.diff(e))) * hop_s
            quarter = int(round(0.5 * half / hop_s))
            i0, i1 = max(0, int(e[0]) - quarter), min(len(d), int(e[-1]) + quarter + 1)
            vals = s[e]
            upper = vals >= np.median(vals)
            hi = float(np.median(vals[upper])) if upper.any() else float(vals.max())
            lo = float(np.median(vals[~upper])) if (~upper).any() else float(vals.min())
            mid, amp = 0.5 * (hi + lo), max(0.5 * (hi - lo), 1e-6)
            seg = s[e[0] : e[-1] + 1]
            squareness = float(np.mean(np.abs(seg - mid) > 0.7 * amp))
            first_is_hi = abs(vals[0] - hi) < abs(vals[0] - lo)
            runs.append(
                PeriodicRun(
                    i0=i0,
                    i1=i1,
                    rate_hz=sine_rate(d[e[0] : e[-1] + 1], hop_s, fmin_hz, fmax_hz),
                    extent_cents=float(np.median(swings[k:j])),
                    squareness=squareness,
                    first_level=hi if first_is_hi else lo,
                    other_level=lo if first_is_hi else hi,
                    n_extrema=len(e),
                )
            )
        k = j
    return runs


def sine_rate(y: np.ndarray, hop_s: float, fmin_hz: float, fmax_hz: float) -> float:
    """Frequency of the best least-squares sinusoid (plus offset and linear trend) on a 0.02 Hz grid.

    Searched coarse to fine (0.1 Hz, then 0.02 Hz around the best): the explained energy's peak
    is about 1/duration wide (≥ 0.5 Hz for the ≤ 2 s spans measured here), so the coarse grid
    cannot step over it, and the search costs a fifth of a full 0.02 Hz sweep.
    """
    t = np.arange(len(y)) * hop_s
    # project out offset and trend first, then the best sinusoid explains the most energy
    basis = np.stack([np.ones_like(t), t - t.mean()], axis=1)
    r = y - basis @ np.linalg.lstsq(basis, y, rcond=None)[0]

    def explained(freqs: np.ndarray) -> np.ndarray:
        w = 2 * np.pi * freqs[:, None] * t[None, :]
        s, c = np.sin(w), np.cos(w)
        s -= s.mean(axis=1, keepdims=True)
        c -= c.mean(axis=1, keepdims=True)
        ss, cc, sc = (s * s).sum(1), (c * c).sum(1), (s * c).sum(1)
        rs, rc = s @ r, c @ r
        det = np.maximum(ss * cc - sc * sc, 1e-12)
        return (cc * rs * rs - 2 * sc * rs * rc + ss * rc * rc) / det

    fine = np.arange(fmin_hz, fmax_hz + 1e-9, 0.02)
    if len(y) * hop_s > 4.0:  # a long span has a narrow peak: sweep the fine grid
        return float(fine[int(np.argmax(explained(fine)))])
    coarse = fine[::5]
    best = coarse[int(np.argmax(explained(coarse)))]
    local = fine[(fine >= best - 0.1 - 1e-9) & (fine <= best + 0.1 + 1e-9)]
    return float(local[int(np.argmax(explained(local)))])


def trill_levels(
    midi: np.ndarray, *, hop_s: float, min_trill_cents: float = 80.0, min_squareness: float = 0.66, min_half_cycles: int = 4
) -> tuple[float, float] | None:
    """``(main, other)`` MIDI levels when ``midi`` holds a trill, else None.

    The main note is the level the trill starts on.
    """
    m = np.asarray(midi, dtype=np.float64)
    m = m[np.isfinite(m)]
    if m.size < 10:
        return None
    base = float(np.median(m))
    runs = periodic_runs(100.0 * (m - base), hop_s, min_swing=min_trill_cents, min_half_cycles=min_half_cycles)
    for r in runs:
        if r.squareness >= min_squareness and r.extent_cents >= min_trill_cents:
            return base + r.first_level / 100.0, base + r.other_level / 100.0
    return None


def shape_curve(u: np.ndarray, shape: str) -> np.ndarray:
    """A transition's progress 0…1 over normalised time ``u``: ``"linear"`` or a sigmoid."""
    u = np.clip(u, 0.0, 1.0)
    if shape == "linear":
        return u
    k = 10.0
    lo, hi = 1.0 / (1.0 + np.exp(k * 0.5)), 1.0 / (1.0 + np.exp(-k * 0.5))
    return (1.0 / (1.0 + np.exp(-k * (u - 0.5))) - lo) / (hi - lo)


TRANSITION_DURATIONS_S = np.arange(0.015, 0.405, 0.005)


def fit_transition(
    t: np.ndarray, y: np.ndarray, y0: float, y1: float, *, t_start: np.ndarray
) -> tuple[float, float, str, float]:
    """Fit ``y(t) = y0 + (y1 - y0) * shape((t - ts) / D)`` over start times ``t_start`` and durations.

    Returns (start_s, duration_s, shape, rms error in the units of y).
    """
    best = (float(t_start[0]), float(TRANSITION_DURATIONS_S[0]), "linear", np.inf)
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if t.size < 3:
        return best
    for shape in ("linear", "sigmoid"):
        u = (t[None, None, :] - t_start[:, None, None]) / TRANSITION_DURATIONS_S[None, :, None]  # (starts, durations, frames)
        pred = y0 + (y1 - y0) * shape_curve(u, shape)
        err = np.sqrt(np.mean((pred - y[None, None, :]) ** 2, axis=2))
        k = np.unravel_index(np.argmin(err), err.shape)
        if err[k] < best[3] - 1e-9:
            best = (float(t_start[k[0]]), float(TRANSITION_DURATIONS_S[k[1]]), shape, float(err[k]))
    return best
