"""Declipping by autoregressive (LPC) interpolation, kept beyond the clip level.

A clipped take has lost its peaks: every run of samples stuck at the rail stands for a waveform
that went further. :class:`ARDeclipper` rebuilds each run from the samples around it, as Janssen,
Veldhuis and Vries's least-squares AR interpolation does ("Adaptive interpolation of discrete-time
signals that can be modeled as autoregressive processes", IEEE TASSP 1986), with the constraint
that makes declipping *consistent* (Adler et al., "A constrained matching pursuit approach to
audio declipping", ICASSP 2011): a rebuilt sample lies on its run's side of the rail, at or beyond
the clip level, and at most ``max_overshoot_db`` past it.

How, per frame of ``frame_ms`` (hop half a frame, periodic-Hann weights that sum to one):

1. the AR model of order ``order`` is fitted by least squares (covariance method) on the
   frame's reliable stretches only, i.e. prediction windows that hold no clipped sample;
2. the clipped samples are the minimiser of the frame's prediction-error energy with the reliable
   samples held fixed: ``T_UU x_U = -T_UK x_K`` with ``T`` the Toeplitz matrix of the AR filter's
   autocorrelation. Clipped samples more than ``order`` apart do not interact, so the system falls
   into one small block per cluster of runs; all blocks are solved together (batched);
3. samples that came out on the wrong side of the rail (or too far past it) are pinned to that
   bound and the block solved again (a few active-set passes);
4. each clipped sample is the Hann-weighted mean of its two frames' estimates.

Samples that are not clipped are never changed: an unclipped take comes back bit-identical.
Frames whose clipped share exceeds ``max_clipped_fraction`` (or that have too few reliable
windows for the model) leave their samples to the other frame, or clipped as they were.

Streaming: every frame depends only on the input samples in it (and ``min_run`` beside it, to
tell a run from a single peak), so the stage returns its output ``latency_samples(sr)`` late, in
one call as in a stream; :meth:`ARDeclipper.declip` (and ``process_into``, which the clean-up
uses) is the aligned offline form.

Measured on real vocals clipped at 5 % and 10 % of samples: see ``tools/bench_restore.py`` and
``firmware/docs/restore.md``.

Examples
--------
>>> import numpy as np
>>> sr = 48000
>>> t = np.arange(sr // 5) / sr
>>> truth = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 440 * t + 1.0)
>>> rail = 0.55
>>> clipped = np.clip(truth, -rail, rail).astype(np.float32)
>>> fixed = ARDeclipper(threshold=rail).declip(clipped, sr)
>>> where = np.abs(clipped) >= rail
>>> err = lambda y: float(np.sqrt(np.mean((y[where] - truth[where]) ** 2)))
>>> bool(err(fixed) < 0.1 * err(clipped))
True
>>> bool(np.array_equal(fixed[~where], clipped[~where]))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analysis.cleanup import MIN_CLIP_RUN, clipped_runs
from ..errors import RenderError
from .stages import OutputDelay, Stage, db_to_gain

#: Active-set passes for the clip-level constraint.
CONSTRAINT_PASSES = 4
#: Model-and-interpolate passes per frame (Janssen's iteration).
PASSES = 2
#: Frames solved together (bounds the batched temporaries: a few MB).
FRAMES_PER_BATCH = 64


def _frame_len(sr: int, frame_ms: float) -> int:
    n = int(round(sr * frame_ms / 1000.0))
    return max(64, n + (n % 2))  # even: the hop is half a frame


def _hann(n: int) -> np.ndarray:
    # periodic Hann: two frames half a frame apart sum to exactly one
    return np.sin(np.pi * np.arange(n) / n) ** 2


def _ar_fit_autocorr(frames: np.ndarray, order: int) -> np.ndarray:
    """AR prediction-error filters ``(F, order + 1)`` by the autocorrelation method over Hann-windowed frames."""
    n = frames.shape[1]
    w = frames * _hann_sym(n)[None, :]
    spec = np.fft.rfft(w, 2 * n, axis=1)
    r = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : order + 1]
    r[:, 0] = r[:, 0] * (1.0 + 1e-4) + 1e-12  # a little white noise: a well-conditioned, stable model
    lag = np.abs(np.arange(order)[:, None] - np.arange(order)[None, :])
    toe = r[:, lag]
    a = np.ones((frames.shape[0], order + 1))
    a[:, 1:] = np.linalg.solve(toe, -r[:, 1:, None])[:, :, 0]
    return a


def _hann_sym(n: int) -> np.ndarray:
    return np.hanning(n)


def _estimate_frames(x: np.ndarray, mask: np.ndarray, starts: np.ndarray, *, n: int, order: int, threshold: float,
                     cap: float, max_fraction: float) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For each frame ``x[s:s+n]`` that holds clipped samples: ``(s, indices into x, estimates)``."""
    results: list[tuple[int, np.ndarray, np.ndarray]] = []
    # clipped samples per frame, from a running count; frames batched by similar counts (the
    # systems are padded to the batch's largest)
    running = np.concatenate([[0], np.cumsum(mask)])
    all_counts = running[starts + n] - running[starts]
    use = (all_counts > 0) & (all_counts <= max_fraction * n)
    starts = starts[use][np.argsort(all_counts[use], kind="stable")]
    for b0 in range(0, starts.size, FRAMES_PER_BATCH):
        st = starts[b0:b0 + FRAMES_PER_BATCH]
        idx = st[:, None] + np.arange(n)[None, :]
        fm = mask[idx]
        counts = fm.sum(axis=1)
        frames = x[idx].astype(np.float64)
        f_count, m = st.size, int(counts.max())
        # each frame's clipped positions, padded (padding rows become identity rows of the system)
        rank = np.cumsum(fm, axis=1) - 1
        pos = np.zeros((f_count, m), np.int64)
        real = np.zeros((f_count, m), bool)
        rows, cols = np.nonzero(fm)
        pos[rows, rank[rows, cols]] = cols
        real[rows, rank[rows, cols]] = True
        sign = np.where(real, np.sign(np.take_along_axis(frames, pos, axis=1)), 0.0)
        lag = np.abs(pos[:, :, None] - pos[:, None, :])
        near = (lag <= order) & real[:, :, None] & real[:, None, :]
        lag = np.minimum(lag, order)
        known = np.where(fm, 0.0, frames)
        current = frames.copy()
        est = np.zeros((f_count, m))
        for _ in range(PASSES):  # Janssen: model from the current frame, samples from the model, again
            a = _ar_fit_autocorr(current, order)
            spec = np.fft.rfft(a, 2 * order + 2, axis=1)
            r_c = np.fft.irfft(np.abs(spec) ** 2, 2 * order + 2, axis=1)[:, : order + 1]  # lags 0..order
            t = np.where(near, r_c[np.arange(f_count)[:, None, None], lag], 0.0)
            kern = np.concatenate([r_c[:, :0:-1], r_c], axis=1)  # lags -order..order
            size = n + 2 * order
            tk_full = np.fft.irfft(np.fft.rfft(known, size, axis=1) * np.fft.rfft(kern, size, axis=1), size, axis=1)
            tk = tk_full[:, order:order + n]  # (T x_known) at each sample of the frame
            rhs = np.where(real, -np.take_along_axis(tk, pos, axis=1), 0.0)
            est = _solve_bounded(t, rhs, sign, real, threshold, cap)
            np.put_along_axis(current, pos, np.where(real, est, np.take_along_axis(current, pos, axis=1)), axis=1)
        for f in range(f_count):
            k = int(counts[f])
            results.append((int(st[f]), idx[f, pos[f, :k]], est[f, :k]))
    return results


def _solve_bounded(t: np.ndarray, rhs: np.ndarray, sign: np.ndarray, real: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Solve the batched systems ``t x = rhs`` with ``lo <= sign * x <= hi`` on the real rows (active-set passes)."""
    m = t.shape[1]
    eye = np.eye(m, dtype=bool)[None, :, :]
    pinned = ~real
    value = np.zeros_like(rhs)
    x = value
    for _ in range(CONSTRAINT_PASSES):
        a = np.where(pinned[:, :, None], eye, t)
        x = np.linalg.solve(a, np.where(pinned, value, rhs)[:, :, None])[:, :, 0]
        s = sign * x
        low, high = ~pinned & (s < lo), ~pinned & (s > hi)
        if not (low.any() or high.any()):
            break
        value = np.where(low, sign * lo, np.where(high, sign * hi, value))
        pinned = pinned | low | high
    x = np.where(pinned & real, value, x)
    return np.where(real, sign * np.clip(sign * x, lo, hi), 0.0)


@dataclass
class ARDeclipper(Stage):
    """Rebuild clipped runs by AR (LPC) interpolation constrained to lie beyond the clip level.

    Parameters
    ----------
    threshold : float
        The clip level (magnitude): samples at or above it, in runs of ``min_run`` or more, are
        clipped. :func:`melisma.analysis.cleanup.detect_clipping` finds it.
    order : int
        AR model order (32 at 48 kHz follows a voice's spectral envelope over a few ms).
    frame_ms : float
        Frame over which one model holds (hop: half of it).
    max_overshoot_db : float
        How far past the clip level a rebuilt sample may go.
    min_run : int
        Shortest run at the rail that counts as clipping (single peaks are natural).
    max_clipped_fraction : float
        Frames with more clipped samples than this share are not rebuilt.

    Examples
    --------
    >>> import numpy as np
    >>> x = (0.3 * np.sin(np.arange(4800) / 10)).astype(np.float32)
    >>> bool(np.array_equal(ARDeclipper(threshold=0.5).declip(x, 48000), x))  # nothing at the rail
    True
    """

    threshold: float = 0.99
    order: int = 16
    frame_ms: float = 10.667
    max_overshoot_db: float = 12.0
    min_run: int = MIN_CLIP_RUN
    max_clipped_fraction: float = 0.5
    #: Clipped runs found by the last offline call (:meth:`declip` / :meth:`process_into`).
    repaired_runs: int = field(default=0, init=False, repr=False)
    _streams: list[dict[str, Any]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise RenderError(f"ARDeclipper: threshold={self.threshold} must be a positive magnitude (the clip level, e.g. 0.99)")
        if not 4 <= int(self.order) <= 256:
            raise RenderError(f"ARDeclipper: order={self.order} is out of range; use 16-64 (32 suits a voice at 48 kHz)")
        if self.frame_ms <= 0 or self.max_overshoot_db < 0 or self.min_run < 1:
            raise RenderError(f"ARDeclipper: need frame_ms > 0, max_overshoot_db >= 0 and min_run >= 1, got "
                              f"frame_ms={self.frame_ms}, max_overshoot_db={self.max_overshoot_db}, min_run={self.min_run}")

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "threshold": self.threshold, "order": self.order, "frame_ms": self.frame_ms,
                "max_overshoot_db": self.max_overshoot_db, "min_run": self.min_run}

    def reset(self) -> None:
        self._streams = None

    def latency_samples(self, sr: int) -> int:
        return _frame_len(sr, self.frame_ms) + self.min_run

    def _accumulate(self, x: np.ndarray, mask: np.ndarray, starts: np.ndarray, n: int, num: np.ndarray,
                    den: np.ndarray) -> None:
        """Add every frame's Hann-weighted estimates of its clipped samples into ``num`` / ``den`` (indexed as ``x``)."""
        if starts.size == 0 or not mask.any():
            return
        cap = self.threshold * db_to_gain(self.max_overshoot_db)
        window = _hann(n)
        for start, pos, est in _estimate_frames(x, mask, starts, n=n, order=int(self.order), threshold=self.threshold,
                                                cap=cap, max_fraction=self.max_clipped_fraction):
            w = window[pos - start]
            num[pos] += w * est
            den[pos] += w

    # -- offline, aligned ---------------------------------------------------------------------

    def declip(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The whole signal declipped, aligned (no latency); mono or ``(channels, samples)``."""
        y = np.array(audio, dtype=np.float32, order="C")
        self.process_into(y, sr)
        return y

    def process_into(self, audio: np.ndarray, sr: int) -> None:
        """:meth:`declip`, overwriting ``audio`` (float32) with the result; counts :attr:`repaired_runs`."""
        self.repaired_runs = 0
        n = _frame_len(sr, self.frame_ms)
        hop = n // 2
        for ch in audio if audio.ndim == 2 else [audio]:
            starts_r, ends_r = clipped_runs(ch, threshold=self.threshold, min_run=self.min_run)
            if starts_r.size == 0:
                continue
            self.repaired_runs += int(starts_r.size)
            # the signal with ``hop`` zeros in front (the stream's frame k = -1) and a frame of zeros after
            x = np.concatenate([np.zeros(hop, np.float32), ch, np.zeros(n, np.float32)])
            mask = np.zeros(x.size, bool)
            lengths = ends_r - starts_r
            mask[np.repeat(starts_r + hop, lengths) + np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths,
                                                                                                lengths)] = True
            # the frames (absolute positions k * hop, as the stream has them) that hold a run's first or
            # last sample: any other frame touching a run lies inside it, all clipped, and is skipped
            k = np.unique(np.concatenate([starts_r // hop - 1, starts_r // hop, (ends_r - 1) // hop - 1, (ends_r - 1) // hop]))
            starts = (k[k >= -1] + 1) * hop
            starts = starts[starts + n <= x.size]
            num = np.zeros(x.size)
            den = np.zeros(x.size)
            self._accumulate(x, mask, starts, n, num, den)
            done = np.flatnonzero(den > 0)
            ch[done - hop] = (num[done] / den[done]).astype(np.float32)

    # -- streaming: ``latency_samples`` late ---------------------------------------------------

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = audio if audio.ndim == 2 else audio[None, :]
        n = _frame_len(sr, self.frame_ms)
        if self._streams is None or len(self._streams) != x.shape[0]:
            hop = n // 2
            self._streams = [{"buf": np.zeros(hop, np.float32), "buf0": -hop, "next_k": -1, "total": 0, "emitted": 0,
                              "num": np.zeros(hop), "den": np.zeros(hop),
                              "delay": OutputDelay(1, self.latency_samples(sr))} for _ in range(x.shape[0])]
        out = np.stack([self._stream(ch, st, n) for ch, st in zip(x, self._streams, strict=True)])
        return out if audio.ndim == 2 else out[0]

    def _stream(self, block: np.ndarray, st: dict[str, Any], n: int) -> np.ndarray:
        hop, margin = n // 2, self.min_run
        st["buf"] = np.concatenate([st["buf"], block])
        st["num"] = np.concatenate([st["num"], np.zeros(block.size)])
        st["den"] = np.concatenate([st["den"], np.zeros(block.size)])
        st["total"] += block.size
        # frames whose samples and ``margin`` beyond them have arrived
        k_end = (st["total"] - n - margin) // hop + 1
        if k_end > st["next_k"]:
            buf0 = st["buf0"]
            starts = np.arange(st["next_k"], k_end) * hop - buf0
            buf = st["buf"]
            runs = clipped_runs(buf, threshold=self.threshold, min_run=self.min_run)
            mask = np.zeros(buf.size, bool)
            for a, b in zip(*(r.tolist() for r in runs), strict=True):
                mask[a:b] = True
            self._accumulate(buf, mask, starts, n, st["num"], st["den"])
            final = k_end * hop - buf0  # samples before this are final
            lo = st["emitted"] - buf0  # the first sample not yet passed on
            seg = buf[lo:final].copy()
            den, num = st["den"][lo:final], st["num"][lo:final]
            done = den > 0
            seg[done] = (num[done] / den[done]).astype(np.float32)
            st["delay"].push(seg[None, :])
            keep = final - margin
            st["buf"], st["num"], st["den"] = buf[keep:], st["num"][keep:], st["den"][keep:]
            st["buf0"] = buf0 + keep
            st["next_k"] = k_end
            st["emitted"] = k_end * hop
        return st["delay"].pop(block.size)[0]


# -- finding a rail that a codec or noise has smeared ----------------------------------------------

#: Depths under the take's near-peak level (its 99.99th-percentile magnitude) at which
#: :func:`detect_soft_clipping` looks for a lost rail, dB.
SOFT_RAIL_DEPTHS_DB = (0.5, 1.0, 2.0)
#: Near-peak runs a depth needs before its test counts (fewer: natural peaks, nothing to tell).
SOFT_CLIP_MIN_RUNS = 20
#: A take is soft-clipped when the AR model rebuilds the upper quarter of its near-peak runs at
#: least this far (dB) above what the take holds. Measured (firmware/docs/restore.md): limited and
#: unclipped takes 0.33 dB at most, takes clipped 1-10 % before AAC 1.1 dB at least.
SOFT_CLIP_MIN_OVERSHOOT_DB = 0.6
#: Seconds of the take the test rebuilds at each depth: the one-second stretches with the most near-peak samples.
SOFT_CLIP_EXCERPT_S = 4


def detect_soft_clipping(take: np.ndarray, *, sr: int, depths_db: tuple[float, ...] = SOFT_RAIL_DEPTHS_DB,
                         min_overshoot_db: float = SOFT_CLIP_MIN_OVERSHOOT_DB) -> dict[str, Any]:
    """Find clipping whose flat tops a lossy codec (AAC, MP3) or noise has smeared.

    :func:`melisma.analysis.cleanup.detect_clipping` looks for samples exactly at a rail; after
    AAC the clipped samples lie 0.3-0.8 dB under the lost rail and ripple, and a take clipped in
    the analog stage and then amplified has noise on its rail, so neither is found there. A
    peak-level statistic cannot tell such a take from a hard-limited one (phone AGC): both pile
    samples up under their peak. Their shapes differ: a limited peak keeps its curvature, a clipped
    one was cut flat. So at each depth in ``depths_db`` under the take's near-peak level, the runs
    of samples above that level (:data:`~melisma.analysis.cleanup.MIN_CLIP_RUN` or longer) are
    rebuilt by the AR model of :class:`ARDeclipper` from the samples around them, and the take
    counts as clipped when the upper quarter of the runs is rebuilt at least ``min_overshoot_db``
    above what the take holds: the waveform around them says they went further. Only the
    :data:`SOFT_CLIP_EXCERPT_S` one-second stretches with the most near-peak samples are rebuilt,
    so an unclipped or limited take costs a fraction of a second.

    Parameters
    ----------
    take : np.ndarray
        Mono take, float32, at its own rate.
    sr : int
        Sample rate in Hz.
    depths_db : tuple of float
        Levels under the near-peak level to test, dB.
    min_overshoot_db : float
        The rebuilt runs' overshoot (75th percentile over runs, dB) from which the take is clipped.

    Returns
    -------
    dict
        The keys of :func:`~melisma.analysis.cleanup.detect_clipping` (``fraction``, ``threshold``,
        ``regions``, ``longest_ms``, ``heavy``; ``regions`` 0 when the take is not clipped) plus
        ``method`` ('soft rail'), ``overshoot_db`` (the largest overshoot measured) and
        ``depth_db`` (the depth it was measured at: ``threshold`` lies that far under the near-peak level).

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> t = np.arange(sr) / sr
    >>> voice = np.sin(2 * np.pi * 220 * t) + 0.4 * np.sin(2 * np.pi * 440 * t + 1.0)
    >>> rng = np.random.default_rng(0)
    >>> clipped = np.clip(voice, -1.2, 1.2) + 1e-3 * rng.standard_normal(sr)  # a noisy rail
    >>> detect_soft_clipping(clipped.astype(np.float32), sr=sr)["regions"] > 0
    True
    >>> detect_soft_clipping((0.7 * voice).astype(np.float32), sr=sr)["regions"]
    0
    """
    from ..analysis.cleanup import HEAVY_CLIPPING_FRACTION

    x = np.asarray(take, dtype=np.float32)
    result: dict[str, Any] = {"fraction": 0.0, "threshold": 1.0, "regions": 0, "longest_ms": 0.0, "heavy": False,
                              "method": "soft rail", "overshoot_db": 0.0, "depth_db": None}
    if x.ndim != 1 or x.size < sr // 10 or not np.all(np.isfinite(x)):
        return result
    mag = np.abs(x)
    near_peak = float(np.quantile(mag, 0.9999))
    if near_peak <= 0.0:
        return result
    best, best_level, best_depth = -np.inf, None, None
    for depth in depths_db:
        level = near_peak * db_to_gain(-float(depth))
        overshoot = _rebuilt_overshoot_db(x, mag, level, sr)
        if overshoot is not None and overshoot > best:
            best, best_level, best_depth = overshoot, level, float(depth)
    if best_level is None:
        return result
    result.update(overshoot_db=round(float(best), 3), depth_db=best_depth)
    if best < min_overshoot_db:
        return result
    starts, ends = clipped_runs(x, threshold=best_level)
    fraction = float(np.sum(ends - starts)) / x.size
    result.update(fraction=round(fraction, 6), threshold=round(float(best_level), 6), regions=int(starts.size),
                  longest_ms=round(1000.0 * int(np.max(ends - starts, initial=0)) / sr, 3),
                  heavy=bool(fraction >= HEAVY_CLIPPING_FRACTION))
    return result


def _rebuilt_overshoot_db(x: np.ndarray, mag: np.ndarray, level: float, sr: int) -> float | None:
    """The 75th percentile over near-peak runs (at or above ``level``) of how far the AR model rebuilds
    each run's peak above the take's (dB), in the stretches with the most such samples; None with too few runs.
    """
    n = int(sr)
    counts = [int(np.count_nonzero(mag[a:a + n] >= level)) for a in range(0, x.size, n)]
    chosen = sorted(np.argsort(counts)[::-1][:SOFT_CLIP_EXCERPT_S].tolist())
    return rebuilt_overshoot_db([x[c * n:(c + 1) * n] for c in chosen if counts[c] > 0], level=level, sr=sr)


def rebuilt_overshoot_db(segments: list[np.ndarray], *, level: float, sr: int) -> float | None:
    """How far (dB, 75th percentile over runs) the AR model rebuilds the peaks of the runs at or above
    ``level`` in ``segments`` (stretches of one take) above what they hold; None with fewer than
    :data:`SOFT_CLIP_MIN_RUNS` runs. The measure of :func:`detect_soft_clipping`, for callers that
    pick the stretches themselves (a long take read block by block).
    """
    ratios: list[np.ndarray] = []
    for seg in segments:
        seg = np.asarray(seg, dtype=np.float32)
        starts, ends = clipped_runs(seg, threshold=level)
        if starts.size == 0:
            continue
        rebuilt = ARDeclipper(threshold=level).declip(seg, sr)
        # each run's peak, rebuilt and as it is (reduceat over [start, end) pairs; a sentinel for the last end)
        edges = np.stack([starts, ends], axis=1).ravel()
        peak_rebuilt = np.maximum.reduceat(np.append(np.abs(rebuilt), 0.0), edges)[::2]
        peak_take = np.maximum.reduceat(np.append(np.abs(seg), 0.0), edges)[::2]
        ratios.append(20.0 * np.log10(peak_rebuilt / np.maximum(peak_take, 1e-12)))
    if not ratios:
        return None
    r = np.concatenate(ratios)
    return float(np.quantile(r, 0.75)) if r.size >= SOFT_CLIP_MIN_RUNS else None
