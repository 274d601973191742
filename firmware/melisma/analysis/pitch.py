"""Fundamental-frequency (f0) tracking of a solo vocal, behind one interface.

:class:`PitchTracker` is the interface: anything with a ``name`` and a ``track(y, *, sr)`` method
that returns a :class:`PitchTrack`. :class:`DspPitchTracker` is the DSP baseline (a pYIN-style
tracker in vectorised numpy); an on-device TFLite model can take its place without any caller
changing.

The baseline works at 16 kHz with a 5 ms hop:

1. the cumulative-mean-normalised difference function (YIN) of every frame, computed for all
   frames at once through the FFT (``d(tau) = E0 + E_tau - 2 r(tau)``);
2. pYIN's threshold distribution turns the dips of that function into pitch candidates with
   probabilities: a dip gets the prior mass of every threshold for which it is the *first* dip
   below the threshold (which is what keeps YIN off the sub-octave);
3. a Viterbi pass over the best candidates of every frame plus an unvoiced state chooses the path;
   a jump costs in proportion to its size in semitones, so an isolated octave error loses to
   its continuous neighbours, and switching voicing costs a fixed amount, so voicing does not flicker;
4. voicing also needs energy: frames far below the take's loud frames are unvoiced.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.pitch import track_pitch
>>> sr = 16000
>>> t = np.arange(sr) / sr
>>> y = (0.3 * np.sign(np.sin(2 * np.pi * 220 * t))).astype(np.float32)
>>> track = track_pitch(y, sr=sr)
>>> round(float(np.median(track.hz[track.hz > 0])))
220
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import AnalysisError

__all__ = ["DspPitchTracker", "PitchTrack", "PitchTracker", "hz_to_midi", "midi_to_hz", "track_pitch"]


def hz_to_midi(f0_hz: np.ndarray | float) -> np.ndarray:
    """MIDI note number (float) of a frequency; 0 Hz (unvoiced) gives NaN.

    >>> float(hz_to_midi(440.0))
    69.0
    """
    f = np.asarray(f0_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 69.0 + 12.0 * np.log2(np.where(f > 0, f, 1.0) / 440.0), np.nan)


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    """Frequency of a (float) MIDI note number.

    >>> float(midi_to_hz(69.0))
    440.0
    """
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


@dataclass
class PitchTrack:
    """An f0 curve: one value per frame, frame ``i`` centred at ``i * hop_s`` seconds.

    Attributes
    ----------
    hop_s : float
        Frame hop in seconds.
    hz : np.ndarray
        f0 per frame in Hz, float32; 0 means unvoiced.
    confidence : np.ndarray
        How sure the tracker is that the frame is voiced at that pitch, 0..1, float32.
    tracker : str
        Name of the tracker that produced it.
    """

    hop_s: float
    hz: np.ndarray
    confidence: np.ndarray
    tracker: str = "unknown"

    def __post_init__(self) -> None:
        self.hz = np.asarray(self.hz, dtype=np.float32)
        self.confidence = np.asarray(self.confidence, dtype=np.float32)
        if self.hz.ndim != 1 or self.hz.shape != self.confidence.shape:
            raise AnalysisError(
                f"PitchTrack needs 1-D hz and confidence of equal length, got {self.hz.shape} and {self.confidence.shape}"
            )
        if not self.hop_s > 0:
            raise AnalysisError(f"PitchTrack hop_s must be positive, got {self.hop_s}")

    @property
    def times_s(self) -> np.ndarray:
        """Centre time of every frame in seconds."""
        return np.arange(len(self.hz)) * self.hop_s

    @property
    def midi(self) -> np.ndarray:
        """f0 as float MIDI numbers, NaN where unvoiced."""
        return hz_to_midi(self.hz)

    @property
    def voiced(self) -> np.ndarray:
        return self.hz > 0

    @property
    def duration_s(self) -> float:
        return len(self.hz) * self.hop_s

    def to_dict(self) -> dict:
        """JSON-ready dict: ``{"hop_s", "hz": [...], "confidence": [...], "tracker"}`` (Hz to 0.01, confidence to 0.001)."""
        return {
            "hop_s": float(self.hop_s),
            "hz": np.round(self.hz.astype(np.float64), 2).tolist(),
            "confidence": np.round(self.confidence.astype(np.float64), 3).tolist(),
            "tracker": self.tracker,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PitchTrack:
        try:
            return cls(
                hop_s=float(d["hop_s"]),
                hz=np.asarray(d["hz"], dtype=np.float32),
                confidence=np.asarray(d["confidence"], dtype=np.float32),
                tracker=str(d.get("tracker", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AnalysisError(f"not a pitch track dict ({exc!r}); expected keys hop_s, hz, confidence") from None


@runtime_checkable
class PitchTracker(Protocol):
    """What every f0 tracker offers: a name and ``track(y, *, sr) -> PitchTrack`` (hop 10 ms or finer)."""

    name: str

    def track(self, y: np.ndarray, *, sr: int) -> PitchTrack: ...


def _beta_cdf_table(a: float, b: float, n: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import betainc  # the regularised incomplete beta function is the Beta CDF

    x = np.linspace(0.0, 1.0, n)
    return x.astype(np.float32), betainc(a, b, x).astype(np.float32)


@dataclass
class DspPitchTracker:
    """pYIN-style f0 tracker in vectorised numpy (see the module docstring).

    Parameters
    ----------
    fmin_hz, fmax_hz : float
        Search range (65 Hz = C2 for low male voices, 1100 Hz = C#6 for sopranos).
    hop_s : float
        Frame hop; 5 ms.
    window_s : float
        YIN integration window; 25 ms holds more than one period of the lowest note (65 Hz).
    threshold_mean : float
        Mean of the Beta prior over YIN thresholds (pYIN uses about 0.1-0.15).
    jump_cost_per_semitone : float
        Viterbi cost of a pitch jump between frames, per semitone.
    voicing_switch_cost : float
        Viterbi cost of switching between voiced and unvoiced.
    silence_db : float
        Frames this far below the loud frames (99th percentile of frame RMS) are unvoiced.
    """

    fmin_hz: float = 65.0
    fmax_hz: float = 1100.0
    hop_s: float = 0.005
    window_s: float = 0.025
    threshold_mean: float = 0.15
    jump_cost_per_semitone: float = 0.12
    voicing_switch_cost: float = 3.0
    silence_db: float = 40.0
    n_candidates: int = 4
    name: str = field(default="dsp-pyin", init=False)

    #: Internal analysis rate.
    SR = 16000

    def track(self, y: np.ndarray, *, sr: int) -> PitchTrack:
        y = _as_mono(y)
        if sr != self.SR:
            from ..audio_io import resample

            y = resample(y, orig_sr=sr, target_sr=self.SR)
        hop = int(round(self.hop_s * self.SR))
        win = int(round(self.window_s * self.SR))
        tau_min = max(2, int(np.floor(self.SR / self.fmax_hz)))
        tau_max = int(np.ceil(self.SR / self.fmin_hz)) + 1
        n_frames = int(np.ceil(len(y) / hop)) if len(y) else 0
        if n_frames == 0:
            return PitchTrack(self.hop_s, np.zeros(0), np.zeros(0), self.name)

        # Frame i is centred on sample i*hop: the window plus a typical lag straddles it.
        frame_len = win + tau_max + 1
        pad_left = win // 2 + tau_max // 4
        # The high-passed, zero-padded signal is made left to right as the frames need it and held
        # only from the current block on (a take-length float64 array would be 23 MB for 3 minutes).
        xp = _HighpassedSignal(y, self.SR, pad_left)

        thr_x, thr_cdf = _beta_cdf_table(*_beta_params(self.threshold_mean))
        K = self.n_candidates
        cand_tau = np.zeros((n_frames, K))
        cand_p = np.zeros((n_frames, K))
        rms = np.zeros(n_frames)
        n_fft = 1 << int(np.ceil(np.log2(frame_len)))
        chunk = 512  # frames per block: the block's FFT and lag matrices stay a few MB
        for c0 in range(0, n_frames, chunk):
            c1 = min(c0 + chunk, n_frames)
            fr = np.lib.stride_tricks.sliding_window_view(xp.span(c0 * hop, (c1 - 1) * hop + frame_len), frame_len)[::hop]
            ct, cp, cr = _yin_candidates(fr, win, tau_min, tau_max, n_fft, K, thr_x, thr_cdf)
            cand_tau[c0 : c0 + chunk] = ct
            cand_p[c0 : c0 + chunk] = cp
            rms[c0 : c0 + chunk] = cr
        del xp

        # Energy gate: relative to the loud part of the take, and an absolute floor (-70 dBFS).
        rms_db = 20 * np.log10(rms + 1e-12)
        ref_db = np.percentile(rms_db, 99) if n_frames else 0.0
        loud = (rms_db > ref_db - self.silence_db) & (rms_db > -70.0)
        cand_p[~loud] *= 1e-3

        cand_hz = np.where(cand_tau > 0, self.SR / np.maximum(cand_tau, 1e-9), 0.0)
        choice, voiced = _viterbi(
            cand_hz, cand_p, jump_cost=self.jump_cost_per_semitone, switch_cost=self.voicing_switch_cost
        )
        rows = np.arange(n_frames)
        hz = np.where(voiced, cand_hz[rows, choice], 0.0)
        hz = np.where((hz >= self.fmin_hz * 0.97) & (hz <= self.fmax_hz * 1.03), hz, 0.0)
        conf = np.where(hz > 0, cand_p[rows, choice], np.minimum(cand_p.sum(axis=1), 1.0))
        return PitchTrack(self.hop_s, hz.astype(np.float32), np.clip(conf, 0, 1).astype(np.float32), self.name)


def track_pitch(y: np.ndarray, *, sr: int, tracker: PitchTracker | None = None) -> PitchTrack:
    """f0 track of a (mostly) monophonic vocal.

    Parameters
    ----------
    y : np.ndarray
        Audio, ``(samples,)`` or ``(channels, samples)`` (channels are averaged).
    sr : int
        Sample rate of ``y``.
    tracker : PitchTracker, optional
        The tracker to use; the DSP baseline :class:`DspPitchTracker` by default.

    Returns
    -------
    PitchTrack

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16000
    >>> y = 0.2 * np.sin(2 * np.pi * 330 * np.arange(sr) / sr)
    >>> t = track_pitch(y.astype(np.float32), sr=sr)
    >>> t.hop_s, bool(abs(np.median(t.hz[t.hz > 0]) - 330) < 2)
    (0.005, True)
    """
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    tracker = tracker or DspPitchTracker()
    y = np.asarray(y)
    if y.size and not np.all(np.isfinite(y)):
        raise AnalysisError("audio holds NaN or Inf samples; clean or re-decode it before pitch tracking")
    return tracker.track(y, sr=sr)


# --------------------------------------------------------------------------------------------
# internals


def _as_mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise AnalysisError(f"audio must be (samples,) or (channels, samples), got shape {y.shape}")
    return y


class _HighpassedSignal:
    """``pad_left`` zeros, the high-passed signal (:func:`_highpass_into`'s filter, its state carried
    from block to block, so the samples are the one-shot filter's), then zeros; made left to right
    and kept only from the start of the last span asked for.
    """

    def __init__(self, y: np.ndarray, sr: int, pad_left: int, block: int = 1 << 16):
        from .. import dsp

        self._y, self._pad, self._block = y, pad_left, block
        self._sos = dsp.design("butter", 4, 50.0, "highpass", sr, "sos")
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._buf = np.zeros(0)
        self._start = 0  # self._buf holds samples [start, start + len(buf)) of the padded signal

    def span(self, a: int, b: int) -> np.ndarray:
        """Samples ``a:b`` (``a`` never below an earlier call's)."""
        from .. import dsp

        end = self._start + self._buf.size
        if b > end:
            new = np.zeros(b - end)
            ya, yb = max(end - self._pad, 0), min(b - self._pad, len(self._y))
            for s in range(ya, yb, self._block):
                e = min(s + self._block, yb)
                new[s + self._pad - end : e + self._pad - end], self._zi = dsp.sosfilt(
                    self._sos, self._y[s:e].astype(np.float64), self._zi)
            self._buf = np.concatenate((self._buf[max(0, a - self._start):], new))
            self._start = max(a, self._start)
        elif a > self._start:
            self._buf = self._buf[a - self._start:]
            self._start = a
        return self._buf[a - self._start : b - self._start]


def _highpass_into(x: np.ndarray, sr: int, out: np.ndarray, block: int = 1 << 16) -> None:
    """Remove DC, rumble and mains hum below the lowest sung note (a 4th-order 50 Hz high-pass).

    Filters in float64 block by block (the filter state carries over, so the result is the
    one-shot filter's) into ``out``, without a float64 copy of the whole input.
    """
    from .. import dsp

    sos = dsp.design("butter", 4, 50.0, "highpass", sr, "sos")
    zi = np.zeros((sos.shape[0], 2))
    for a in range(0, len(x), block):
        out[a : a + block], zi = dsp.sosfilt(sos, x[a : a + block].astype(np.float64), zi)


def _beta_params(mean: float, concentration: float = 13.33) -> tuple[float, float]:
    a = mean * concentration
    return a, concentration - a


def _yin_candidates(frames, win, tau_min, tau_max, n_fft, K, thr_x, thr_cdf):
    """Pitch candidates (lag in samples, probability) of a block of frames, pYIN style."""
    import scipy.fft

    n = frames.shape[0]
    # float32 FFTs are about 3x faster than numpy's float64 ones and precise enough for YIN.
    frames = (frames - frames[:, :win].mean(axis=1, keepdims=True)).astype(np.float32)
    spec_full = scipy.fft.rfft(frames, n_fft, axis=1)
    spec_head = scipy.fft.rfft(frames[:, :win], n_fft, axis=1)
    r = scipy.fft.irfft(np.conj(spec_head) * spec_full, n_fft, axis=1)[:, : tau_max + 1].astype(np.float64)
    cs = np.concatenate([np.zeros((n, 1)), np.cumsum(frames.astype(np.float64) ** 2, axis=1)], axis=1)
    taus = np.arange(tau_max + 1)
    e0 = cs[:, win : win + 1]
    e_tau = cs[:, taus + win] - cs[:, taus]
    d = np.maximum(e0 + e_tau - 2.0 * r, 0.0)
    rms = np.sqrt(e0[:, 0] / win)

    # Cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{j<=tau} d(j).
    cum = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        dn[:, 1:] = np.where(cum > 1e-12, d[:, 1:] * taus[1:] / cum, 1.0)

    seg = dn[:, tau_min - 1 : tau_max + 1]  # one lag of context each side
    mid = seg[:, 1:-1]
    is_min = (mid < seg[:, :-2]) & (mid <= seg[:, 2:])
    # Probability that a dip is the first one below a random threshold T ~ Beta:
    # P(v_j < T <= min_{i<j} v_i) = CDF(prefix_min) - CDF(v_j). Done on the dips only (sparse).
    rows_m, cols_m = np.nonzero(is_min)
    v = np.minimum(mid[rows_m, cols_m], 1.0)
    big = 4.0  # larger than the range of v: makes one running minimum restart at every row
    run = np.minimum.accumulate(v - rows_m * big) + rows_m * big
    first = np.ones(len(v), dtype=bool)
    first[1:] = rows_m[1:] != rows_m[:-1]
    prefix = np.empty_like(v)
    prefix[1:] = run[:-1]
    prefix[first] = 1.0
    p = np.clip(np.interp(prefix, thr_x, thr_cdf) - np.interp(v, thr_x, thr_cdf), 0.0, None)
    prob = np.zeros(mid.shape, dtype=np.float64)
    prob[rows_m, cols_m] = p
    # pYIN: when no dip lies below any threshold, the global minimum keeps a small probability.
    gmin = np.argmin(np.where(is_min, mid, np.inf), axis=1)
    rows = np.arange(n)
    prob[rows, gmin] += 0.01 * (prob.sum(axis=1) < 1e-6) * is_min[rows, gmin]

    k = min(K, prob.shape[1])
    top = np.argpartition(-prob, k - 1, axis=1)[:, :k]
    p_top = np.take_along_axis(prob, top, axis=1)
    # Parabolic interpolation of the lag around each dip.
    idx = top + 1  # index into seg
    y0 = np.take_along_axis(seg, idx - 1, axis=1)
    y1 = np.take_along_axis(seg, idx, axis=1)
    y2 = np.take_along_axis(seg, np.minimum(idx + 1, seg.shape[1] - 1), axis=1)
    denom = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (y0 - y2) / denom, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    tau = top + tau_min + shift
    tau = np.where(p_top > 0, tau, 0.0)
    return tau, p_top, rms


def _viterbi(cand_hz: np.ndarray, cand_p: np.ndarray, *, jump_cost: float, switch_cost: float,
             block: int = 400, overlap: int = 100):
    """Best path over K candidates + 1 unvoiced state per frame; returns (candidate index, voiced).

    The track is cut into overlapping blocks decoded side by side (one numpy step per frame of a
    block, not per frame of the take); only each block's centre is kept, where the Viterbi path has
    long since merged with the global one.
    """
    n, K = cand_hz.shape
    S = K + 1
    eps = 1e-4
    voiced_p = np.clip(cand_p.sum(axis=1), 0.0, 1.0)
    em = np.empty((n, S))
    em[:, :K] = -np.log(cand_p + eps)
    em[:, :K][cand_hz <= 0] = 1e9
    em[:, K] = -np.log(1.0 - voiced_p + eps) + 0.7  # a slight bias towards voiced when in doubt
    semis = np.log2(np.where(cand_hz > 0, cand_hz, 1.0)) * 12.0

    n_blocks = max(1, int(np.ceil(n / block)))
    length = block + 2 * overlap
    # Frame index of every block position; padding frames get neutral (all-zero) emissions.
    pos = np.arange(n_blocks)[:, None] * block - overlap + np.arange(length)[None, :]
    valid = (pos >= 0) & (pos < n)
    posc = np.clip(pos, 0, n - 1)
    em_b = np.where(valid[..., None], em[posc], 0.0)  # (B, L, S)
    f_b = semis[posc]  # (B, L, K)

    cost = em_b[:, 0].copy()
    back = np.zeros((n_blocks, length, S), dtype=np.int8)
    trans_uv = np.zeros((S, S))
    trans_uv[:K, K] = switch_cost
    trans_uv[K, :K] = switch_cost
    bidx = np.arange(n_blocks)[:, None]
    for i in range(1, length):
        jump = jump_cost * np.minimum(np.abs(f_b[:, i - 1, :, None] - f_b[:, i, None, :]), 24.0)  # (B, K, K)
        trans = np.broadcast_to(trans_uv, (n_blocks, S, S)).copy()
        trans[:, :K, :K] += jump
        total = cost[:, :, None] + trans
        best = total.argmin(axis=1)  # (B, S)
        back[:, i] = best
        cost = np.take_along_axis(total, best[:, None, :], axis=1)[:, 0] + em_b[:, i]
        cost -= cost.min(axis=1, keepdims=True)
    path = np.empty((n_blocks, length), dtype=np.int64)
    path[:, -1] = cost.argmin(axis=1)
    for i in range(length - 1, 0, -1):
        path[:, i - 1] = back[bidx[:, 0], i, path[:, i]]
    states = path[:, overlap : overlap + block].reshape(-1)[:n]
    voiced = states < K
    return np.where(voiced, states, 0), voiced
