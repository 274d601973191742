"""Bleed is not singing: drop the f0 frames whose "voice" is the backing's own bleed.

A phone take recorded with the backing on the speaker holds the backing too. The clean-up takes
most of it out (:func:`melisma.render.clean.remove_bleed`), but what is left in the singer's pauses
still has a pitch (a bass note, a chord's root), and a pitch tracker that sees a periodic signal
calls it voiced: ghost notes far outside the singer's range, which correction would then shift.

:func:`reject_bleed` looks at every voiced frame of a pitch track with the aligned backing in hand:

1. the take's and the backing's short-time spectra (64 ms frames, 10 ms hop, up to 4 kHz); the
   backing's power is held over the room's tail (100 ms decay), as the bleed reaches the mic late;
2. per frequency bin, how much of the backing reaches the take: a low percentile (25 %) over the
   frames where the backing is active (every 4th frame, 40 ms apart) of ``|take|^2 / |backing|^2``. In the pauses this ratio is
   the bleed's gain; where the singer sings it is far larger, so a low percentile is the gain;
3. per voiced frame, the take's power at the harmonics of the frame's f0 against the bleed the
   backing predicts at the same bins: the *harmonic voice-to-bleed ratio*. A frame whose pitch
   comes from the bleed has no more power at its harmonics than the bleed predicts (ratio near
   0 dB); a sung note stands well above the bleed there, even at the pitch the backing plays
   (the voice is louder than its own bleed at its harmonics);
4. a frame is bleed when that ratio is below ``threshold_db``, or below ``range_threshold_db``
   while its pitch lies far outside the singer's range (measured on the frames that pass);
   flags are smoothed over 45 ms, a voiced run that is mostly bleed keeps only its clearly sung
   frames (ratio at least ``range_threshold_db``), and what is left of a run shorter than 60 ms goes;
5. a run the ratio keeps whose harmonic power rises and decays with the backing's at the same
   harmonics (:meth:`BleedVoicingGate.follows_backing`) is a backing note the bleed removal left
   strong (far above the take-wide gain), not singing.

The gate acts only when the take holds bleed (``bleed_present``: the alignment found the backing
in the take, or the bleed fit detected it); a headphone take comes back unchanged, bit for bit.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.pitch import PitchTrack
>>> sr = 16000
>>> t = np.arange(2 * sr) / sr
>>> backing = 0.3 * np.sin(2 * np.pi * 110 * t)  # the backing plays A2
>>> take = (0.05 * backing).astype(np.float32)   # the take holds only its bleed
>>> track = PitchTrack(0.005, np.full(400, 110.0), np.full(400, 0.9))  # tracked as voiced
>>> cleaned, info = reject_bleed(track, take, backing, sr=sr, bleed_present=True)
>>> int(np.count_nonzero(cleaned.hz)), info["rejected_frames"]
(0, 400)
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np

from ..errors import AnalysisError
from .pitch import PitchTrack

__all__ = ["BLEED_METHODS", "BleedGatedTracker", "BleedVoicingGate", "reject_bleed"]

#: Alignment methods that found the backing in the take (its bleed): the gate acts after them.
BLEED_METHODS = ("bleed", "calibrated+refined")

#: STFT of the gate (at 16 kHz: 64 ms frames, 10 ms hop) and its top frequency.
N_FFT = 1024
HOP_S = 0.010
TOP_HZ = 4000.0
#: How long the backing's power is held for the room's tail (exponential decay time, s).
TAIL_S = 0.1
#: Percentile of take/backing power that estimates the bleed gain per bin.
GAIN_PERCENTILE = 25.0
#: Most frames the bleed-gain percentile is taken over (every 4th frame of a take up to ~6.7 min).
GAIN_ROWS = 10000
#: A voiced run whose log power at its harmonics correlates this well with the predicted bleed's ...
FOLLOW_CORRELATION = 0.6
#: ... and stays below this over it (dB, median over the run) is the backing's note, not singing.
FOLLOW_RATIO_DB = 24.0
#: Shortest run (s) the correlation is judged on.
FOLLOW_MIN_S = 0.05


class BleedVoicingGate:
    """The bleed gate as an object (see the module docstring); :func:`reject_bleed` uses it.

    Parameters
    ----------
    threshold_db : float
        A voiced frame whose harmonic voice-to-bleed ratio is below this is bleed.
    range_threshold_db : float
        The same ratio's threshold for frames whose pitch lies more than ``range_margin_semitones``
        outside the singer's range.
    range_margin_semitones : float
        How far outside the range (5th-95th percentile of the frames that pass) counts as outside.
    n_harmonics : int
        Harmonics of f0 summed (below ``TOP_HZ``).
    """

    def __init__(self, *, threshold_db: float = 6.0, range_threshold_db: float = 12.0,
                 range_margin_semitones: float = 5.0, n_harmonics: int = 10):
        if n_harmonics < 1:
            raise AnalysisError(f"BleedVoicingGate: n_harmonics={n_harmonics} must be at least 1")
        self.threshold_db = float(threshold_db)
        self.range_threshold_db = float(range_threshold_db)
        self.range_margin_semitones = float(range_margin_semitones)
        self.n_harmonics = int(n_harmonics)

    def harmonic_ratio_db(self, track: PitchTrack, take: np.ndarray, backing: np.ndarray, *, sr: int) -> np.ndarray:
        """Per track frame, the take's power at the f0's harmonics over the predicted bleed there, dB.

        NaN for unvoiced frames (and where neither take nor backing has power).
        """
        return _ratio_db(*self.harmonic_powers(track, take, backing, sr=sr))

    def harmonic_powers(self, track: PitchTrack, take: np.ndarray, backing: np.ndarray, *,
                        sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Per track frame, the take's power at the f0's harmonics and the bleed the backing predicts there.

        Two arrays (NaN for unvoiced frames); :meth:`harmonic_ratio_db` is their ratio in dB.
        """
        take = _mono(take, "take")
        back = _mono(backing, "backing")
        hop = max(1, int(round(HOP_S * sr)))
        n_fft = int(2 ** round(np.log2(N_FFT * sr / 16000.0)))
        top_bin = min(n_fft // 2, int(TOP_HZ * n_fft / sr))
        n = max(take.size, back.size)
        n_frames = n // hop + 1
        window = np.hanning(n_fft + 2)[1:-1].astype(np.float32)
        decay = float(np.exp(-hop / (TAIL_S * sr)))

        voiced = np.flatnonzero(track.hz > 0)
        out_v = np.full(len(track.hz), np.nan)
        out_b = np.full(len(track.hz), np.nan)
        if voiced.size == 0 or n == 0:
            return out_v, out_b
        f0 = track.hz[voiced].astype(np.float64)
        frame_of = np.clip(np.round(voiced * track.hop_s / (hop / sr)).astype(int), 0, n_frames - 1)
        h = np.arange(1, self.n_harmonics + 1)
        bins = f0[:, None] * h[None, :] * n_fft / sr  # (voiced, H) fractional bins
        ok = (bins >= 1.0) & (bins < top_bin - 1)
        lo = np.clip(np.floor(bins).astype(int), 0, top_bin - 2)

        v_h = np.zeros(bins.shape)
        b_h = np.zeros(bins.shape)
        ratio_rows: list[np.ndarray] = []
        active_rows: list[np.ndarray] = []
        held = np.zeros(top_bin)
        chunk = 1024
        # the gain statistics on every 4th frame (40 ms apart: plenty), or sparser on a long take
        # so that at most GAIN_ROWS frames are kept (their percentile is as good; the rows would
        # otherwise grow with the take: ~40 MB for 15 minutes)
        stride = 4
        while n_frames > stride * GAIN_ROWS and stride < chunk:
            stride *= 2
        order = np.argsort(frame_of, kind="stable")
        fo_sorted = frame_of[order]
        for c0 in range(0, n_frames, chunk):
            c1 = min(n_frames, c0 + chunk)
            V = _power_frames(take, c0, c1, hop, n_fft, window, top_bin)
            B = _power_frames(back, c0, c1, hop, n_fft, window, top_bin)
            for i in range(B.shape[0]):  # hold over the room's tail
                held = np.maximum(B[i], decay * held)
                B[i] = held
            ratio_rows.append((V[::stride] / (B[::stride] + 1e-20)).astype(np.float32))
            active_rows.append(B[::stride].astype(np.float32))
            a, b = np.searchsorted(fo_sorted, [c0, c1])
            if b > a:
                sel = order[a:b]
                rows = frame_of[sel] - c0
                # the larger of the two bins around each harmonic (a harmonic between bins)
                v_h[sel] = np.maximum(V[rows[:, None], lo[sel]], V[rows[:, None], lo[sel] + 1])
                b_h[sel] = np.maximum(B[rows[:, None], lo[sel]], B[rows[:, None], lo[sel] + 1])
        gain = _bleed_gain(np.concatenate(ratio_rows), np.concatenate(active_rows))
        g_h = gain[lo] * 0.5 + gain[np.minimum(lo + 1, top_bin - 1)] * 0.5
        out_v[voiced] = np.sum(np.where(ok, v_h, 0.0), axis=1)
        out_b[voiced] = np.sum(np.where(ok, g_h * b_h, 0.0), axis=1)
        return out_v, out_b

    def follows_backing(self, track: PitchTrack, take_power: np.ndarray, bleed_power: np.ndarray) -> np.ndarray:
        """Voiced runs whose power at their harmonics rises and falls with the backing's there (bool per frame).

        A backing note left in a pause by the bleed removal can stand well above the bleed the
        backing predicts (the gain is one low percentile per bin over the whole take), but it still
        starts and decays with the backing's note: over a run of frames the ratio keeps (cut where
        the pitch jumps by more than a semitone), the log powers of the take and of the predicted
        bleed at the run's harmonics correlate (at least :data:`FOLLOW_CORRELATION`),
        while the run stays below :data:`FOLLOW_RATIO_DB` over the bleed. A sung note, even at the
        backing's pitch, has its own envelope and stands higher.
        """
        voiced = track.hz > 0
        out = np.zeros(len(track.hz), dtype=bool)
        min_frames = max(3, int(round(FOLLOW_MIN_S / track.hop_s)))
        # the runs the ratio alone keeps, cut where the pitch jumps (one tone per run)
        ratio = _ratio_db(take_power, bleed_power)
        kept = voiced & ~(ratio < self.threshold_db)
        midi = np.where(voiced, 12.0 * np.log2(np.maximum(track.hz, 1e-6) / 440.0), 0.0)
        jump = np.r_[False, np.abs(np.diff(midi)) > 1.0]
        runs: list[tuple[int, int]] = []
        for a, b in _runs(kept):
            cuts = [a, *(a + np.flatnonzero(jump[a + 1 : b]) + 1).tolist(), b]
            runs.extend(pairwise(cuts))
        for a, b in runs:
            pv, pb = take_power[a:b], bleed_power[a:b]
            ok = np.isfinite(pv) & np.isfinite(pb) & (pv > 0) & (pb > 0)
            if np.count_nonzero(ok) < min_frames:
                continue
            lv, lb = 10.0 * np.log10(pv[ok]), 10.0 * np.log10(pb[ok])
            if np.std(lv) < 1e-9 or np.std(lb) < 1e-9 or np.median(lv - lb) >= FOLLOW_RATIO_DB:
                continue
            if float(np.corrcoef(lv, lb)[0, 1]) >= FOLLOW_CORRELATION:
                out[a:b] = True
        return out

    def flags(self, track: PitchTrack, ratio_db: np.ndarray, follows: np.ndarray | None = None) -> np.ndarray:
        """Which voiced frames are bleed (bool per track frame), from :meth:`harmonic_ratio_db`.

        ``follows``, when given (:meth:`follows_backing`), marks runs that are bleed too.
        """
        voiced = track.hz > 0
        r = np.where(np.isfinite(ratio_db), ratio_db, np.inf)
        bleed = voiced & (r < self.threshold_db)
        if follows is not None:
            bleed |= voiced & follows
        # the singer's range, from the frames that clearly pass
        sung = voiced & (r >= self.range_threshold_db)
        if np.count_nonzero(sung) >= 40:
            midi = 69.0 + 12.0 * np.log2(track.hz[sung].astype(np.float64) / 440.0)
            lo, hi = np.percentile(midi, [5, 95])
            m = np.full(len(track.hz), np.nan)
            m[voiced] = 69.0 + 12.0 * np.log2(track.hz[voiced].astype(np.float64) / 440.0)
            outside = voiced & ((m < lo - self.range_margin_semitones) | (m > hi + self.range_margin_semitones))
            bleed |= outside & (r < self.range_threshold_db)
        # smooth over 45 ms (a median of the flags), within voiced frames only
        width = max(1, int(round(0.045 / track.hop_s)) | 1)
        if width > 1 and bleed.any():  # the median of 0/1 flags is the majority over the window
            padded = np.pad(bleed.astype(np.int32), width // 2, mode="edge")
            votes = np.convolve(padded, np.ones(width, np.int32), mode="valid")
            bleed = voiced & (votes > width // 2)
        # a voiced run that is mostly bleed loses all but its clearly sung frames (a note sung at
        # the backing's pitch can continue its bleed in one run); what is left under 60 ms goes too
        min_len = max(1, int(round(0.060 / track.hop_s)))
        for a, b in _runs(voiced):
            share = np.mean(bleed[a:b])
            if share > 0.5:
                bleed[a:b] |= r[a:b] < self.range_threshold_db
            if share > 0:
                for c, d in _runs(voiced[a:b] & ~bleed[a:b]):
                    if d - c < min_len:
                        bleed[a + c : a + d] = True
        return bleed


def reject_bleed(track: PitchTrack, take: np.ndarray, backing: np.ndarray | None, *, sr: int, bleed_present: bool,
                 gate: BleedVoicingGate | None = None) -> tuple[PitchTrack, dict[str, Any]]:
    """The track with its bleed frames unvoiced, and a summary for the report.

    Parameters
    ----------
    track : PitchTrack
        The f0 track of ``take``.
    take : np.ndarray
        The (bleed-removed) vocal the track was made from, on the backing's timeline.
    backing : np.ndarray or None
        The aligned backing, ``(samples,)`` or ``(channels, samples)``, same rate.
    sr : int
        Sample rate of ``take`` and ``backing``.
    bleed_present : bool
        Whether the take holds bleed at all; when false (headphones) nothing changes.
    gate : BleedVoicingGate, optional
        Thresholds; the defaults by default.

    Returns
    -------
    (PitchTrack, dict)
        The track (the same object when nothing changed) and ``{"applied", "rejected_frames",
        "voiced_frames", "median_ratio_db"}``.
    """
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    voiced = int(np.count_nonzero(track.hz > 0))
    info: dict[str, Any] = {"applied": False, "rejected_frames": 0, "voiced_frames": voiced}
    if not bleed_present or backing is None or voiced == 0:
        return track, info
    gate = gate or BleedVoicingGate()
    take_power, bleed_power = gate.harmonic_powers(track, take, backing, sr=sr)
    ratio = _ratio_db(take_power, bleed_power)
    follows = gate.follows_backing(track, take_power, bleed_power)
    bleed = gate.flags(track, ratio, follows)
    info["following_frames"] = int(np.count_nonzero(follows))
    info["applied"] = True
    info["rejected_frames"] = int(np.count_nonzero(bleed))
    finite = ratio[np.isfinite(ratio)]
    info["median_ratio_db"] = round(float(np.median(finite)), 1) if finite.size else None
    if not bleed.any():
        return track, info
    hz = track.hz.copy()
    conf = track.confidence.copy()
    hz[bleed] = 0.0
    conf[bleed] = 0.0
    return PitchTrack(track.hop_s, hz, conf, track.tracker), info


class BleedGatedTracker:
    """A pitch tracker whose track goes through :func:`reject_bleed` with the aligned backing.

    Behaves as the tracker it wraps (same ``name``: the f0 is that tracker's, less its bleed
    frames); ``info`` holds the last :func:`reject_bleed` summary. ``backing`` is on the
    timeline and at the rate of the audio that :meth:`track` gets.

    Parameters
    ----------
    inner : PitchTracker
        The tracker that makes the f0.
    backing : np.ndarray
        The aligned backing.
    bleed_present : bool
        Whether the take holds bleed (see :func:`reject_bleed`).
    """

    def __init__(self, inner: Any, backing: np.ndarray, *, bleed_present: bool):
        self.inner = inner
        self.name = getattr(inner, "name", "unknown")
        self.backing = backing
        self.bleed_present = bool(bleed_present)
        self.info: dict[str, Any] = {"applied": False, "rejected_frames": 0}

    def track(self, y: np.ndarray, *, sr: int) -> PitchTrack:
        """The inner tracker's track of ``y`` with its bleed frames unvoiced."""
        from .pitch import track_pitch

        track = track_pitch(y, sr=sr, tracker=self.inner)
        track, self.info = reject_bleed(track, y, self.backing, sr=sr, bleed_present=self.bleed_present)
        return track


# --------------------------------------------------------------------------------------------
# internals


def _mono(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise AnalysisError(f"{what} must be (samples,) or (channels, samples), got shape {y.shape}")
    if y.size and not np.all(np.isfinite(y)):
        raise AnalysisError(f"{what} holds NaN or Inf samples")
    return y


def _ratio_db(take_power: np.ndarray, bleed_power: np.ndarray) -> np.ndarray:
    """``10 log10(take / bleed)`` per frame; NaN where unvoiced or neither has power."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 10.0 * np.log10((take_power + 1e-20) / (bleed_power + 1e-20))
    r[~(np.isfinite(take_power) & np.isfinite(bleed_power)) | ((take_power <= 0) & (bleed_power <= 0))] = np.nan
    return r


def _power_frames(x: np.ndarray, c0: int, c1: int, hop: int, n_fft: int, window: np.ndarray, top_bin: int) -> np.ndarray:
    """Power spectra (bins below ``top_bin``) of frames ``c0..c1-1``, frame ``i`` centred on sample ``i * hop``."""
    start = c0 * hop - n_fft // 2
    length = (c1 - c0 - 1) * hop + n_fft
    seg = np.zeros(length, np.float32)
    a, b = max(start, 0), min(start + length, x.size)
    if b > a:
        seg[a - start : b - start] = x[a:b]
    import scipy.fft

    frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop][: c1 - c0]
    spec = scipy.fft.rfft(frames * window, axis=1)[:, :top_bin]  # float32 in, complex64 out
    return (spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2)


def _bleed_gain(ratio: np.ndarray, backing_power: np.ndarray) -> np.ndarray:
    """Per bin, the bleed's power gain: a low percentile of take/backing over the backing's active frames."""
    med = np.median(backing_power, axis=0)
    active = (backing_power > 0.5 * med[None, :]) & (backing_power > 1e-14)
    r = np.where(active, ratio, np.inf)
    r.sort(axis=0)  # per bin, the active frames' ratios first, in order
    count = active.sum(axis=0)
    idx = np.clip(np.floor(GAIN_PERCENTILE / 100.0 * (count - 1)).astype(int), 0, r.shape[0] - 1) if r.shape[0] else None
    if idx is None:
        return np.zeros(ratio.shape[1])
    gain = np.where(count > 0, r[idx, np.arange(r.shape[1])], 0.0)
    gain = np.where(np.isfinite(gain), gain, 0.0)
    # a median over 5 neighbouring bins: one odd bin does not decide
    return np.median(np.lib.stride_tricks.sliding_window_view(np.pad(gain, 2, mode="edge"), 5), axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of every run of True."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[::2].tolist(), d[1::2].tolist(), strict=True))
