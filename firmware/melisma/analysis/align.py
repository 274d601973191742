"""Line a karaoke take up with its backing track.

A take recorded on a phone over a backing track is late (or early) by the phone's playback and
recording latency: Bluetooth round trips are typically 0–500 ms. When the singer used a speaker,
the take carries the backing as *bleed*, and the offset can be measured directly by
cross-correlating the take with the backing. When they used headphones there is no bleed, and the
only evidence is the app's latency calibration.

How the bleed is found
----------------------
Both signals are mixed to mono, decimated to :data:`ANALYSIS_SR` and cut into windows of about
:data:`WINDOW_S` seconds of take. Each take window is correlated against the stretch of backing it
can line up with (the window widened by the search range) in the frequency domain, limited to
:data:`BAND_HZ` (where phone speakers and microphones both work). Before that, both signals are
reweighted cell by cell in a short-time spectrum (:data:`TF_FRAME`), so that every
time–frequency cell counts by how much bleed it can carry rather than by how loud it is:

* the take is divided by its locally smoothed *power*: the matched-filter weight when the
  interference (voice, noise, hum) is much louder than the bleed. Cells where the singer's
  harmonics sit are turned down; the gaps between harmonics, notes and phrases, where only the
  bleed and the noise floor remain, are turned up;
* the backing is *whitened* (divided by its locally smoothed magnitude), so that sustained notes
  and the beat do not produce broad, ambiguous correlation humps.

The gains are real and positive, i.e. zero-phase: they move nothing in time. On the synthetic
corpus this took the 7-s pass rate from 63 % (plain whitened cross-spectrum) to 97 %.
The voice itself is not in the backing, so after this weighting it only adds noise to the
correlation, it cannot pull the peak. The per-window correlations are summed (coherent evidence
over the whole take); the peak lag is refined to a fraction of a sample by parabolic
interpolation (one analysis sample is 1/16 ms, far below the ±5 ms the mix needs).

Evidence and confidence
-----------------------
``peak_z``: height of the summed peak above the correlation's noise floor in robust standard
deviations (median absolute deviation over all lags). Without bleed the largest of the ~30 000
lags searched rarely exceeds 5.5. ``peak_ratio``: the peak over the best competing peak more than
:data:`SIDELOBE_GUARD_MS` away (music that repeats exactly, e.g. a drum loop, gives competitors at
the beat period). ``window_agreement``: the fraction of windows whose own peak lies within 5 ms
of the overall one. The confidence combines the three and was calibrated on synthetic takes (see
tests/melisma/analysis/test_align.py); it is ~0 without evidence.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.align import estimate_offset, apply_offset
>>> sr = 16000
>>> rng = np.random.default_rng(0)
>>> backing = rng.standard_normal(6 * sr).astype(np.float32)
>>> voice = 3.0 * rng.standard_normal(6 * sr).astype(np.float32)
>>> take = voice + 0.3 * np.roll(backing, int(0.120 * sr))   # bleed 20 dB down, 120 ms late
>>> a = estimate_offset(take, backing, sr=sr)
>>> a.method, round(a.offset_ms)
('bleed', 120)
>>> apply_offset(take, offset_ms=a.offset_ms, sr=sr, length=backing.size).shape
(96000,)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.fft
from scipy.ndimage import uniform_filter

from ..errors import AlignmentError

#: Rate the correlation runs at. The band below holds all the usable bleed; 16 kHz keeps one
#: lag step at 1/16 ms.
ANALYSIS_SR = 16000
#: Band in which phone speakers and phone microphones both reproduce the backing.
BAND_HZ = (250.0, 6000.0)
#: Length of take windows correlated one at a time (memory stays small on a Pi Zero).
WINDOW_S = 4.0
#: Shortest take that can be aligned.
MIN_TAKE_S = 0.5
#: Competing peaks closer than this to the main one are part of it (reverb, speaker ringing).
SIDELOBE_GUARD_MS = 5.0
#: Windows whose own peak lies this close to the overall one agree with it.
AGREEMENT_MS = 5.0
#: Peak heights (robust z) above which the bleed peak is taken as found: over the whole search
#: range, and within :data:`REFINE_RANGE_MS` of a calibrated latency (fewer lags to search, so a
#: lower bar gives the same false-alarm rate).
DETECT_Z = 6.0
REFINE_Z = 4.5
#: Peaks must stand out against the best competitor by this factor to count as found.
DETECT_RATIO = 1.2
#: A bleed found by its single highest lag alone (its response energy below the bar) must be seen
#: by at least this fraction of the windows, when there are three or more.
PEAK_MIN_AGREEMENT = 0.5
#: How far a calibrated latency is trusted to be off when looking for a weak bleed peak.
REFINE_RANGE_MS = 50.0
#: Confidence reported when the offset is only the app's latency calibration, never checked.
CALIBRATED_CONFIDENCE = 0.3
#: Methods :class:`Alignment` can report.
METHODS = ("bleed", "calibrated", "calibrated+refined", "vocal-onsets", "none", "guess")
#: Methods whose offset is known well enough to mix without asking (the others are guesses; an
#: offset from the sung notes against the melody, :mod:`melisma.analysis.music_align`, is a guess).
KNOWN_METHODS = ("bleed", "calibrated", "calibrated+refined")


@dataclass(frozen=True)
class Alignment:
    """How much the take lagged the backing, how it was found and how sure we are.

    Attributes
    ----------
    offset_ms : float
        How much the take lagged the backing; positive means the take is late.
    method : str
        One of ``'bleed'``, ``'calibrated'``, ``'calibrated+refined'``, ``'vocal-onsets'``,
        ``'none'`` (offset unknown), ``'guess'`` (unknown, the best guess accepted by the user).
    confidence : float
        0..1; high means the offset is right. About 0 without evidence.
    details : dict
        Evidence for the mix report (peak height and ratio, search range, candidates, ...).
    """

    offset_ms: float
    method: str
    confidence: float
    details: dict = field(default_factory=dict)

    @property
    def known(self) -> bool:
        """True when the offset was measured or calibrated (:data:`KNOWN_METHODS`); False for a guess or none."""
        return self.method in KNOWN_METHODS

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (floats rounded for the report)."""
        return {
            "offset_ms": round(float(self.offset_ms), 3),
            "method": self.method,
            "confidence": round(float(self.confidence), 3),
            "details": _jsonable(self.details),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


# ---------------------------------------------------------------------------------------------
# Input checks and preparation
# ---------------------------------------------------------------------------------------------


def _check_inputs(take: np.ndarray, backing: np.ndarray, sr: int, max_offset_ms: float) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AlignmentError(f"sr must be a positive integer sample rate, got {sr!r}; the engine uses 48000")
    if not (math.isfinite(max_offset_ms) and 0 < max_offset_ms <= 10_000):
        raise AlignmentError(
            f"max_offset_ms={max_offset_ms!r} is out of range; give a search range in (0, 10000] ms "
            "(phone latencies are 0–500 ms, 1000 is the default)"
        )
    take = np.asarray(take, dtype=np.float32)
    backing = np.asarray(backing, dtype=np.float32)
    if take.ndim == 2 and 1 in take.shape:
        take = take.reshape(-1)
    if take.ndim != 1:
        raise AlignmentError(f"take must be mono (samples,), got shape {take.shape}; mix it to mono first")
    if backing.ndim == 2:
        if backing.shape[0] > 8 and backing.shape[1] <= 8:
            raise AlignmentError(
                f"backing has shape {backing.shape}, which looks like (samples, channels); "
                "pass (channels, samples) (transpose it)"
            )
    elif backing.ndim != 1:
        raise AlignmentError(f"backing must be (samples,) or (channels, samples), got shape {backing.shape}")
    if take.size == 0 or backing.shape[-1] == 0:
        raise AlignmentError(
            f"cannot align empty audio (take has {take.size} samples, backing {backing.size}); "
            "check that both files decoded"
        )
    if take.size < MIN_TAKE_S * sr:
        raise AlignmentError(
            f"take is {take.size / sr:.3f} s long; at least {MIN_TAKE_S} s of singing is needed to align it"
        )
    for name, y in (("take", take), ("backing", backing)):
        # One float64 sum per block: NaN or Inf anywhere makes it non-finite (no full-size mask).
        for a in range(0, y.shape[-1], _BLOCK):
            if not np.isfinite(np.sum(y[..., a:a + _BLOCK], dtype=np.float64)):
                raise AlignmentError(f"{name} contains NaN/Inf samples; the file is damaged, re-export it")
    return take, backing


#: Samples handled at a time when mixing down, masking and decimating (no full-rate copies).
_BLOCK = 1 << 16


def _decimate(y: np.ndarray, sr: int, target_sr: int, *, stop: int | None = None, rail: float | None = None) -> np.ndarray:
    """Mono mix-down (mean of channels), optional zeroing of clipped samples, and decimation, in blocks.

    ``y`` is (samples,) or (channels, samples); only ``y[..., :stop]`` is used. Samples whose
    magnitude reaches ``rail`` are zeroed first (see :func:`_clip_rail`). The streaming resampler
    gives the same output as a one-shot ``soxr.resample`` of the whole signal, without any
    full-rate temporary.
    """
    n = y.shape[-1] if stop is None else min(stop, y.shape[-1])
    if sr == target_sr and y.ndim == 1 and rail is None:
        return y[:n].astype(np.float32, copy=False)
    import soxr

    # Medium quality is plenty: only the band below 0.4 * target_sr is used, and both signals go
    # through the same linear-phase filter, so its delay cancels in the lag.
    stream = soxr.ResampleStream(sr, target_sr, 1, dtype="float32", quality="MQ") if sr != target_sr else None
    out = np.empty(int(math.ceil(n * target_sr / sr)) + 16, np.float32)
    filled = 0
    for a in range(0, max(n, 1), _BLOCK):
        b = min(a + _BLOCK, n)
        block = y[..., a:b]
        block = block.mean(axis=0, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32)
        if rail is not None:
            block[np.abs(block) >= rail] = 0.0
        if stream is not None:
            block = stream.resample_chunk(block, last=b >= n)
        out[filled:filled + block.size] = block
        filled += block.size
    return out[:filled]


def _clip_rail(y: np.ndarray) -> float | None:
    """The level at which a recording clipped, or ``None``: runs of clipped samples carry broadband
    distortion that correlates with nothing, so :func:`_decimate` zeroes them.
    """
    peak = 0.0
    for a in range(0, y.size, _BLOCK):
        peak = max(peak, float(np.max(np.abs(y[a:a + _BLOCK]))) if y[a:a + _BLOCK].size else 0.0)
    if peak <= 0:
        return None
    rail = 0.999 * peak
    # A handful of samples at the maximum is normal; many means the recording clipped.
    count = sum(int(np.count_nonzero(np.abs(y[a:a + _BLOCK]) >= rail)) for a in range(0, y.size, _BLOCK))
    return rail if count >= max(16, 1e-4 * y.size) else None


#: STFT frame for the time-frequency weighting (64 ms at 16 kHz: resolves voice harmonics and
#: follows notes and the gaps between them).
TF_FRAME = 1024
#: Neighbourhood (frames, bins) over which a cell's magnitude is estimated for the weighting.
TF_SMOOTH = (3, 3)
#: The take is divided by its local magnitude to this power (2: by its power, the matched filter
#: against loud interference), the backing by its local magnitude to this one (1: whitened).
TAKE_EXPONENT = 2.0
BACKING_EXPONENT = 1.0


def _tf_weight(y: np.ndarray, *, exponent: float, bleed: tuple[np.ndarray, int] | None = None,
               allocate: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Divide every time-frequency cell by its locally smoothed magnitude ** exponent.

    A real, positive gain per cell is a zero-phase time-varying filter: it reweights what
    each cell contributes to the correlation without moving anything in time. Hann frames at 50 %
    overlap add back to the input when the gain is 1. Frames are processed :data:`_TF_CHUNK` at a
    time (with one frame of context each side for the smoothing), so the spectrogram never exists
    whole; the floor needs the mean smoothed magnitude first, so the spectra (with ``bleed``, the
    backing's too) are taken twice.

    ``bleed`` (the backing and its offset in samples on the take's timeline, once the bleed is
    found: sample ``i`` of the take hears backing sample ``i - offset``): where it is most of a
    cell, the cell's magnitude is taken over :data:`BLEED_CELL_SMOOTH` instead (see
    :func:`_bleed_share`), so the weighting follows the voice and not the bleed's own comb.
    ``allocate(size)``, when given, makes the (zeroed) output buffer: a long take's goes to a file.
    """
    if exponent == 0:
        return y
    hop = TF_FRAME // 2
    n_frames = int(math.ceil(y.size / hop)) + 1
    window = np.hanning(TF_FRAME + 1)[:TF_FRAME].astype(np.float32)
    wide = BLEED_CELL_SMOOTH if bleed is not None and BLEED_CELL_SMOOTH is not None else None
    halo = max(TF_SMOOTH[0], wide[0] if wide else 0) // 2

    def frames(x: np.ndarray, h0: int, h1: int, shift: int = 0) -> np.ndarray:
        # frames h0..h1-1 of the signal (delayed by ``shift`` samples) with one hop of zeros in front
        # (frame f starts at f * hop - hop), cut from x as needed: no padded copy of the whole signal
        seg = np.zeros((h1 - h0 - 1) * hop + TF_FRAME, dtype=np.float32)
        first = h0 * hop - hop - shift
        a, b = max(first, 0), min(first + seg.size, x.size)
        if b > a:
            seg[a - first : b - first] = x[a:b]
        return np.lib.stride_tricks.sliding_window_view(seg, TF_FRAME)[::hop]

    def chunk_spectra(f0: int, f1: int) -> tuple[np.ndarray, np.ndarray]:
        h0, h1 = max(f0 - halo, 0), min(f1 + halo, n_frames)
        spec = scipy.fft.rfft(frames(y, h0, h1) * window, axis=1)
        mag = np.abs(spec)
        fine = uniform_filter(mag, size=TF_SMOOTH, mode="nearest")  # float32: spec is complex64
        if wide is not None:
            assert bleed is not None and gain is not None
            coarse = uniform_filter(mag, size=wide, mode="nearest")
            b_mag = uniform_filter(np.abs(scipy.fft.rfft(frames(bleed[0], h0, h1, bleed[1]) * window, axis=1)), size=wide,
                                   mode="nearest")
            share = _bleed_share(coarse, b_mag, gain)
            fine = fine + share * (coarse - fine)
        return spec[f0 - h0 : f1 - h0], fine[f0 - h0 : f1 - h0]

    gain = None
    if bleed is not None and wide is not None:
        gain = _bleed_gain(y, bleed, frames=frames, window=window, n_frames=n_frames, smooth=wide)
    total = 0.0
    for f0 in range(0, n_frames, _TF_CHUNK):
        _, mag = chunk_spectra(f0, min(f0 + _TF_CHUNK, n_frames))
        total += float(np.sum(mag, dtype=np.float64))
    mean_mag = total / (n_frames * (TF_FRAME // 2 + 1))
    floor = np.float32(max(1e-3 * mean_mag, 1e-12))  # squared, still a float32 normal
    out = np.zeros((n_frames + 1) * hop, dtype=np.float32) if allocate is None else allocate((n_frames + 1) * hop)
    for f0 in range(0, n_frames, _TF_CHUNK):
        f1 = min(f0 + _TF_CHUNK, n_frames)
        spec, mag = chunk_spectra(f0, f1)
        gain_cells = mag + floor
        if exponent == 1.0:
            spec /= gain_cells
        elif exponent == 2.0:
            spec /= gain_cells * gain_cells
        else:
            spec /= gain_cells**exponent
        out_frames = scipy.fft.irfft(spec, TF_FRAME, axis=1).astype(np.float32, copy=False)
        for k in range(2):  # overlap-add in two interleaved passes (frames k, k+2, ... do not overlap)
            sub = out_frames[k::2]
            start = (f0 + k) * hop
            length = min(sub.shape[0] * TF_FRAME, out.size - start)
            out[start : start + length] += sub.reshape(-1)[:length]
    return out[hop : hop + y.size]


#: Neighbourhood (frames, bins) of the take's magnitude where the found bleed is most of a cell
#: (17 bins: ~260 Hz at 16 kHz); None keeps :data:`TF_SMOOTH` everywhere.
BLEED_CELL_SMOOTH: tuple[int, int] | None = (3, 17)
#: A cell counts as the bleed's from this share of its magnitude on (0.5: the bleed is most of it),
#: fully at 1; the voice's cells keep the sharp weighting (weak early arrivals need its gain).
BLEED_SHARE_FROM = 0.5
_BLEED_GAIN_FRAMES = 2048  # frames sampled for it (spread over the take)
#: The onset look moves the first arrival later only onto a mirror's twin: an arrival within this
#: (ms) of as far after the new onset as the old one lay before it, with at least this fraction of
#: the old arrival's strength (both relative to their responses' strongest).
MIRROR_TOLERANCE_MS = 1.0
MIRROR_STRENGTH = 0.5


def _bleed_gain(y: np.ndarray, bleed: tuple[np.ndarray, int], *, frames, window: np.ndarray, n_frames: int,
                smooth: tuple[int, int]) -> np.ndarray:
    """Magnitude gain per bin from the backing on the take's timeline to its bleed in the take:
    ``|sum(T conj(B))| / sum(|B|**2)`` over frames spread across the take (the voice, uncorrelated
    with the backing, averages out), smoothed over ``smooth[1]`` bins.
    """
    step = max(1, -(-n_frames // _BLEED_GAIN_FRAMES))
    cross = np.zeros(TF_FRAME // 2 + 1, np.complex128)
    power = np.zeros(TF_FRAME // 2 + 1, np.float64)
    for f0 in range(0, n_frames, _TF_CHUNK * step):
        f1 = min(f0 + _TF_CHUNK * step, n_frames)
        t = scipy.fft.rfft(frames(y, f0, f1)[::step] * window, axis=1)
        b = scipy.fft.rfft(frames(bleed[0], f0, f1, bleed[1])[::step] * window, axis=1)
        cross += np.sum(t * np.conj(b), axis=0)
        power += np.sum(np.abs(b) ** 2, axis=0)
    g = np.abs(cross) / np.maximum(power, 1e-30 + 1e-9 * float(power.max()))
    return uniform_filter(g, size=smooth[1], mode="nearest").astype(np.float32)


def _bleed_share(take_mag: np.ndarray, backing_mag: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """0..1 per cell: how far the cell counts as the bleed's (its share of the take's wide-smoothed
    magnitude, from :data:`BLEED_SHARE_FROM` to 1).
    """
    share = gain * backing_mag / np.maximum(take_mag, 1e-30)
    return np.clip((share - BLEED_SHARE_FROM) / (1.0 - BLEED_SHARE_FROM), 0.0, 1.0)


def _effective_band(y: np.ndarray, sr_a: int, band: tuple[float, float]) -> tuple[float, float]:
    """``band`` with its top lowered to where the take's spectrum falls 60 dB below its voice band
    (a take recorded at 8 kHz and resampled has nothing above 4 kHz).
    """
    from ..dsp import welch_psd

    n = min(y.size, 60 * sr_a)  # a minute is plenty for a long-term spectrum
    f, pxx = welch_psd(y[:n], sr_a, nperseg=1024)
    ref = float(np.median(pxx[(f >= 300) & (f <= 3000)])) if np.any((f >= 300) & (f <= 3000)) else 0.0
    if ref <= 0:
        return band
    alive = np.flatnonzero((pxx >= 1e-6 * ref) & (f >= band[0]))
    if alive.size == 0:
        return band
    top = float(f[alive[-1]]) * 0.95
    return (band[0], max(band[0] + 500.0, min(band[1], top)))


#: Frames of the time-frequency weighting processed at a time (~2 MB of spectrum at 16 kHz).
_TF_CHUNK = 512


# ---------------------------------------------------------------------------------------------
# Correlation
# ---------------------------------------------------------------------------------------------


@dataclass
class _Correlation:
    summed: np.ndarray  # (2 * max_lag + 1,), index k is a lag of (max_lag - k) samples
    window_peaks: np.ndarray  # (used windows,) index of each window's own correlation peak (as in ``summed``)
    max_lag: int
    used_windows: int
    window_s: float
    kernel: np.ndarray | None = None  # the backing's own (weighted) autocorrelation, lags 0..KERNEL_MS, kernel[0] = 1


def _correlate(
    take_a: np.ndarray, backing_a: np.ndarray, *, sr_a: int, max_lag: int, band_hz: tuple[float, float]
) -> _Correlation:
    """Weighted cross-correlation of take windows against the backing, lags ±max_lag samples."""
    n_take = take_a.size
    n_windows = max(1, int(round(n_take / (WINDOW_S * sr_a))))
    win_len = int(math.ceil(n_take / n_windows))
    nfft = scipy.fft.next_fast_len(win_len + 2 * max_lag, real=True)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr_a)
    band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    band_slice = slice(int(np.argmax(band)), int(len(band) - np.argmax(band[::-1])))
    # The backing as if padded with max_lag zeros in front (and zeros past its usable end), so
    # every window can reach max_lag either way; cut per window, never copied whole.
    usable = min(backing_a.size, n_take + max_lag + win_len)

    def padded(a: int, b: int) -> np.ndarray:
        seg = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a - max_lag, 0), min(b - max_lag, usable)
        if hi > lo:
            seg[lo + max_lag - a : hi + max_lag - a] = backing_a[lo:hi]
        return seg

    n_lags = 2 * max_lag + 1
    # only each window's peak index is needed (window agreement): a windows x lags matrix would be
    # 58 MB for a 15-minute take
    window_peaks = np.zeros(n_windows, dtype=np.int64)
    summed_spec = np.zeros(nfft // 2 + 1, dtype=np.complex128)
    kernel_spec = np.zeros(nfft // 2 + 1, dtype=np.float64)
    energies_take = np.array([np.mean(take_a[i * win_len : (i + 1) * win_len] ** 2) for i in range(n_windows)])
    energies_back = np.array([np.mean(padded(i * win_len, i * win_len + win_len + 2 * max_lag) ** 2) for i in range(n_windows)])
    # Windows where either side is (nearly) silent carry no evidence, only numerical noise.
    ref_take = np.median(energies_take[energies_take > 0]) if np.any(energies_take > 0) else 0.0
    ref_back = np.median(energies_back[energies_back > 0]) if np.any(energies_back > 0) else 0.0
    valid = (energies_take > 1e-4 * ref_take) & (energies_back > 1e-4 * ref_back) & (energies_take > 0) & (energies_back > 0)

    for i in np.flatnonzero(valid):
        start = i * win_len
        t_seg = take_a[start : start + win_len]
        b_seg = padded(start, start + win_len + 2 * max_lag)
        t_spec = scipy.fft.rfft(t_seg, nfft)[band_slice]
        b_spec = scipy.fft.rfft(b_seg, nfft)[band_slice]
        weighted = b_spec * np.conj(t_spec)
        # Each window's noise counts equally, so one loud passage cannot drown the rest.
        norm = np.sqrt(np.sum(np.abs(weighted) ** 2)) + 1e-30
        weighted /= norm
        # The backing's own autocorrelation over the same stretch, weighted as the window is: what
        # one arrival looks like in the summed correlation (echoes of sustained bass notes included).
        core = scipy.fft.rfft(padded(start + max_lag, start + max_lag + win_len), nfft)[band_slice]
        kernel_spec[band_slice] += np.abs(core) ** 2 / norm
        full = np.zeros(nfft // 2 + 1, dtype=np.complex128)
        full[band_slice] = weighted
        summed_spec += full
        corr = scipy.fft.irfft(full, nfft)[:n_lags]
        window_peaks[i] = int(np.argmax(corr))
    summed = scipy.fft.irfft(summed_spec, nfft)[:n_lags]
    kernel = None
    if kernel_spec.any():
        k_len = min(nfft // 2, int(round(KERNEL_MS * sr_a / 1000.0)) + 1)
        kernel = scipy.fft.irfft(kernel_spec, nfft)[:k_len]
        kernel = kernel / kernel[0] if kernel[0] > 0 else None
    return _Correlation(
        summed=summed, window_peaks=window_peaks[valid], max_lag=max_lag, used_windows=int(valid.sum()), window_s=win_len / sr_a,
        kernel=kernel,
    )


#: Lags of the backing's autocorrelation kept for taking its echoes out of the response (ms).
KERNEL_MS = 60.0


def _robust_scale(x: np.ndarray) -> tuple[float, float]:
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * 1.4826
    if mad <= 0:
        mad = float(np.std(x)) + 1e-30
    return med, mad


def _parabolic(y: np.ndarray, k: int) -> float:
    if 0 < k < y.size - 1:
        a, b, c = y[k - 1], y[k], y[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            return float(k + 0.5 * (a - c) / denom)
    return float(k)


@dataclass
class _Peak:
    lag_ms: float
    z: float
    ratio: float
    second_lag_ms: float | None
    second_z: float | None
    candidates: list


def _find_peak(corr: np.ndarray, *, max_lag: int, sr_a: int, center_ms: float = 0.0, half_range_ms: float | None = None) -> _Peak:
    """Best peak of a correlation (index k is a lag of max_lag - k samples), optionally near center_ms."""
    med, scale = _robust_scale(corr)
    z = (corr - med) / scale
    lags_ms = (max_lag - np.arange(corr.size)) * 1000.0 / sr_a
    search = np.ones(corr.size, bool) if half_range_ms is None else np.abs(lags_ms - center_ms) <= half_range_ms
    if not search.any():
        search = np.ones(corr.size, bool)
    k = int(np.flatnonzero(search)[np.argmax(z[search])])
    k_fine = _parabolic(corr, k)
    lag_ms = (max_lag - k_fine) * 1000.0 / sr_a
    guard = int(round(SIDELOBE_GUARD_MS * sr_a / 1000.0))
    away = np.ones(corr.size, bool)
    away[max(0, k - guard) : k + guard + 1] = False
    if away.any():
        k2 = int(np.flatnonzero(away)[np.argmax(z[away])])
        second_z = float(z[k2])
        second_lag = float(lags_ms[k2])
        ratio = float(z[k] / second_z) if second_z > 0 else float("inf")
    else:
        second_z, second_lag, ratio = None, None, float("inf")
    # A few distinct candidates for the report (peaks separated by the guard).
    candidates = []
    zc = z.copy()
    for _ in range(3):
        kc = int(np.argmax(zc))
        candidates.append({"offset_ms": float(lags_ms[kc]), "z": float(zc[kc])})
        zc[max(0, kc - guard) : kc + guard + 1] = -np.inf
    return _Peak(
        lag_ms=lag_ms, z=float(z[k]), ratio=min(ratio, 99.0), second_lag_ms=second_lag, second_z=second_z, candidates=candidates
    )


def _window_agreement(window_peaks: np.ndarray, *, max_lag: int, sr_a: int, lag_ms: float) -> tuple[float, list]:
    if window_peaks.shape[0] == 0:
        return 0.0, []
    ks = window_peaks
    lags = (max_lag - ks) * 1000.0 / sr_a
    agree = float(np.mean(np.abs(lags - lag_ms) <= AGREEMENT_MS))
    return agree, [float(v) for v in lags]


def _bleed_confidence(z: float, ratio: float, agreement: float, n_windows: int) -> float:
    """Probability-like confidence that a bleed peak is the true offset.

    The peak height carries most of the evidence: below ~6 robust sigmas a peak of that size
    turns up by chance somewhere among the lags searched. A competitor nearly as high (ratio near
    1) means the music repeats and the choice between them is a coin toss. Window agreement only
    adds evidence when there are several windows.
    """
    p_height = 1.0 / (1.0 + math.exp(-(z - (DETECT_Z - 0.5)) / 0.5))
    p_unique = min(1.0, max(0.0, (ratio - DETECT_RATIO) / (DETECT_RATIO - 1.0)))
    conf = p_height * (0.5 + 0.5 * p_unique)
    if n_windows >= 3:
        conf *= 0.7 + 0.3 * agreement
    elif n_windows == 2 and agreement < 1.0:
        # two windows pointing at different lags: rhythmic noise can line up with the backing
        # by chance (seen on real takes with exercise-bike noise), so trust neither much
        conf *= 0.5
    elif n_windows <= 1 and z < DETECT_Z + 3.0:
        # one window and a modest peak: nothing independent confirms it
        conf *= 0.7
    return float(min(0.99, max(0.0, conf)))


# ---------------------------------------------------------------------------------------------
# The bleed's room response: detection by its energy, offset at its onset
# ---------------------------------------------------------------------------------------------

#: The bleed reaches the mic as a *response*: the direct sound (when the speaker is beside the
#: mic) and then the room's reflections over tens of milliseconds. A speaker across the room
#: (a Bluetooth speaker) may give no direct sound at all, so the energy is spread and no single
#: lag stands out. The detector therefore integrates the squared correlation (in robust z) over
#: :data:`RESPONSE_WINDOW_MS` after each lag, and the offset is the response's *onset* (sound
#: cannot arrive before its shortest path), not its strongest reflection.
RESPONSE_WINDOW_MS = 10.0
#: Detection threshold on the response energy (robust z over all lags). On headphone takes
#: built from the real recordings (tools/eval_align.py --real) the largest value over ±1 s of
#: lags stayed below 5; bleed responses reached 11-1000.
RESPONSE_DETECT_Z = 8.0
#: The response must stand out against the best one elsewhere (outside its own span) by this factor.
RESPONSE_RATIO = 1.3
#: Span of one response around its onset: competitors inside it are its own reflections.
RESPONSE_SPAN_MS = (-20.0, 120.0)
#: How far before the energy peak the onset is looked for.
ONSET_LOOKBACK_MS = 30.0
#: A lag is part of the response when its |z| reaches this, and this fraction of the response's
#: highest |z| (so a strong direct sound's filter ringing does not count as an earlier arrival).
ONSET_Z = 4.5
ONSET_FRACTION = 0.12
#: Arrivals of one response follow each other within this (measured rooms: the first reflection
#: within a few ms of the direct sound, then denser); an earlier arrival further away is not its start.
ONSET_MAX_GAP_MS = 6.0
#: An arrival further than :data:`ONSET_MAX_GAP_MS` before the rest of the response still starts it
#: when its |z| reaches this and this fraction of the response's highest (the direct sound of a hall).
EARLY_STRONG_Z = 7.5
EARLY_STRONG_FRACTION = 0.3
#: The best competitor of a response's energy that lies up to this before it (ms), with at least
#: this fraction of its energy, is the response's own beginning (a diffuse room); 0 switches it off.
RESPONSE_JOIN_MS = 100.0
RESPONSE_JOIN_FRACTION = 0.5
#: ... and when the energy between them stays up: its median at least this (robust z).
RESPONSE_JOIN_Z = 3.0
#: With a calibrated latency, the response is looked for within this of it with a lower bar.
RESPONSE_REFINE_Z = 6.0


@dataclass
class _Response:
    onset_ms: float  # offset at the response's first arrival
    energy_z: float  # detection statistic
    ratio: float  # energy over the best competitor outside the response's span
    competitor_ms: float | None
    competitor_z: float | None
    peak_ms: float  # strongest single lag of the response
    peak_z: float
    candidates: list
    peak_ratio: float = 0.0  # highest single lag over its best competitor outside the response span
    via: str | None = None  # 'energy' or 'peak': the detector that found it; None when neither did
    onset_strength: float = 1.0  # |z| of the first arrival over the response's strongest |z|


def _lag_order(corr: np.ndarray, max_lag: int, sr_a: int) -> tuple[np.ndarray, np.ndarray]:
    """Robust z of a correlation in increasing-lag order, and the lags in ms."""
    med, scale = _robust_scale(corr)
    z = ((corr - med) / scale)[::-1]
    lags_ms = (np.arange(z.size) - max_lag) * 1000.0 / sr_a
    return z, lags_ms


def _response_energy(z: np.ndarray, sr_a: int) -> np.ndarray:
    """Robust z of the mean z² over the :data:`RESPONSE_WINDOW_MS` after each lag."""
    w = max(1, int(round(RESPONSE_WINDOW_MS * sr_a / 1000.0)))
    csum = np.concatenate([[0.0], np.cumsum(z.astype(np.float64) ** 2)])
    idx = np.arange(z.size)
    hi = np.minimum(idx + w, z.size)
    e = (csum[hi] - csum[idx]) / w  # past the last lag counts as nothing (no short, noisy windows)
    med, scale = _robust_scale(e)
    return (e - med) / scale


def _clean_arrivals(z: np.ndarray, lo: int, hi: int, *, kernel: np.ndarray | None, bar: float,
                    gain: float = 0.5, max_iter: int = 400) -> list[int]:
    """Lags of the arrivals in ``z[lo:hi]``, with the backing's own echoes taken out (CLEAN).

    Each arrival shows in the correlation as the backing's autocorrelation ``kernel`` around it,
    which is symmetric: a backing whose bass note repeats every 15 ms puts copies of every arrival
    15 ms *before* it too. CLEAN (as in radio astronomy) takes the largest value, records an arrival
    there, subtracts ``gain`` times the kernel scaled to it, and repeats until nothing in the range
    reaches ``bar``; what is left of the early copies then stays below the bar.
    """
    if kernel is None or kernel.size < 2:
        return [int(lo + j) for j in np.flatnonzero(np.abs(z[lo:hi]) >= bar)]
    m = kernel.size - 1
    a0, b0 = max(0, lo - m), min(z.size, hi + m)
    r = z[a0:b0].astype(np.float64).copy()
    full = np.concatenate([kernel[:0:-1], kernel])  # lags -m..m
    i0, i1 = lo - a0, hi - a0
    found: set[int] = set()
    for _ in range(max_iter):
        seg = np.abs(r[i0:i1])
        j = int(np.argmax(seg))
        if seg[j] < bar:
            break
        c = i0 + j
        amp = r[c]
        found.add(a0 + c)
        k0, k1 = max(0, c - m), min(r.size, c + m + 1)
        r[k0:k1] -= gain * amp * full[k0 - c + m : k1 - c + m]
    return sorted(found)


def _outside_ratio(stat: np.ndarray, k: int, search: np.ndarray, lags_ms: np.ndarray,
                   start: int | None = None) -> tuple[float, float | None, float | None]:
    """``stat[k]`` over the best value of ``stat`` in the search range outside the response span.

    The span runs from lag ``start`` (``k`` when None: where the response begins) to ``k``,
    widened by :data:`RESPONSE_SPAN_MS`.
    """
    first = lags_ms[k if start is None else min(start, k)]
    span = (lags_ms >= first + RESPONSE_SPAN_MS[0] - AGREEMENT_MS) & (lags_ms <= lags_ms[k] + RESPONSE_SPAN_MS[1])
    away = search & ~span
    if not away.any():
        return 99.0, None, None
    k2 = int(np.flatnonzero(away)[np.argmax(stat[away])])
    comp = float(stat[k2])
    return (min(float(stat[k] / comp), 99.0) if comp > 0 else 99.0), float(lags_ms[k2]), comp


def _find_response(z: np.ndarray, ez: np.ndarray, lags_ms: np.ndarray, *, sr_a: int, center_ms: float = 0.0,
                   half_range_ms: float | None = None, kernel: np.ndarray | None = None,
                   energy_bar: float = RESPONSE_DETECT_Z, peak_bar: float = DETECT_Z,
                   onset_fraction: float = ONSET_FRACTION) -> _Response:
    """The strongest response within the search range, its onset and its best competitor.

    Two detectors look at the same correlation: the response energy (a diffuse room response)
    and the highest single lag (a direct path; the sharper test for it). The response is anchored
    where the detector that passes found it (the energy's, when both or neither pass).
    """
    search = np.ones(z.size, bool) if half_range_ms is None else np.abs(lags_ms - center_ms) <= half_range_ms
    if not search.any():
        search = np.ones(z.size, bool)
    idx = np.flatnonzero(search)
    k_e = int(idx[np.argmax(ez[idx])])
    k_p = int(idx[np.argmax(z[idx])])
    e_ratio, e_comp_ms, e_comp = _outside_ratio(ez, k_e, search, lags_ms)
    # A diffuse response (a reverberant room) keeps its energy up for tens of ms and may peak well
    # after it starts: the best competitor just before the peak is then its own beginning.
    k_start = k_e
    for _ in range(3):
        if (RESPONSE_JOIN_MS <= 0 or e_comp_ms is None or e_comp is None
                or not 0 < lags_ms[k_start] - e_comp_ms <= RESPONSE_JOIN_MS or e_comp < RESPONSE_JOIN_FRACTION * ez[k_e]):
            break
        k_new = int(np.argmin(np.abs(lags_ms - e_comp_ms)))
        if float(np.median(ez[k_new:k_start])) < RESPONSE_JOIN_Z:  # two separate responses, not one
            break
        k_start = k_new
        e_ratio, e_comp_ms, e_comp = _outside_ratio(ez, k_e, search, lags_ms, start=k_start)
    p_ratio, p_comp_ms, _ = _outside_ratio(z, k_p, search, lags_ms)
    energy_ok = ez[k_e] >= energy_bar and e_ratio >= RESPONSE_RATIO
    peak_ok = z[k_p] >= peak_bar and p_ratio >= DETECT_RATIO
    via = "energy" if energy_ok else ("peak" if peak_ok else None)
    k = k_p if via == "peak" else k_start
    per_ms = sr_a / 1000.0
    w = int(round(RESPONSE_WINDOW_MS * per_ms))
    lo = max(0, k - int(round(ONSET_LOOKBACK_MS * per_ms)))
    hi = min(z.size, k + w + 1)
    az = np.abs(z[lo:hi])
    top = int(np.argmax(az))
    bar = max(ONSET_Z, onset_fraction * float(az[top]))
    arrivals = _clean_arrivals(z, lo, hi, kernel=kernel, bar=bar)
    # Walk back from the strongest arrival through arrivals that follow each other closely: an
    # isolated blip well before the response is noise, not a path.
    # A strong arrival further back is a path too: in a hall the first reflections trail the direct
    # sound by 10-30 ms, so the direct sound stands alone before the response.
    first = lo + top
    max_gap = int(round(ONSET_MAX_GAP_MS * per_ms))
    strong = max(EARLY_STRONG_Z, EARLY_STRONG_FRACTION * float(az[top]))
    for j in sorted((a for a in arrivals if a <= lo + top), reverse=True):
        if first - j > max_gap and (EARLY_STRONG_FRACTION <= 0 or abs(z[j]) < strong):
            continue
        first = int(j)
    # the arrival itself: the largest |z| within half a millisecond after it
    j1 = min(z.size, first + max(2, int(round(0.5 * per_ms))))
    onset_k = first + int(np.argmax(np.abs(z[first:j1])))
    onset_fine = _parabolic(np.abs(z), onset_k)
    onset_ms = (onset_fine - (z.size - 1) / 2.0) / per_ms
    candidates = []
    ec = np.where(search, ez, -np.inf)
    for _ in range(3):
        kc = int(np.argmax(ec))
        if not np.isfinite(ec[kc]):
            break
        candidates.append({"offset_ms": float(lags_ms[kc]), "energy_z": float(ec[kc])})
        ec[(lags_ms >= lags_ms[kc] + RESPONSE_SPAN_MS[0]) & (lags_ms <= lags_ms[kc] + RESPONSE_SPAN_MS[1])] = -np.inf
    span_hi = min(z.size, first + int(round(RESPONSE_SPAN_MS[1] * per_ms)) + 1)
    strongest = float(np.max(np.abs(z[first:span_hi]))) if span_hi > first else 0.0
    onset_strength = float(abs(z[onset_k]) / strongest) if strongest > 0 else 1.0
    return _Response(onset_ms=float(onset_ms), energy_z=float(ez[k_e]), ratio=e_ratio, onset_strength=onset_strength,
                     competitor_ms=p_comp_ms if via == "peak" else e_comp_ms, competitor_z=e_comp,
                     peak_ms=float(lags_ms[lo + top]), peak_z=float(z[k_p]), candidates=candidates,
                     peak_ratio=p_ratio, via=via)


#: When the first arrival found is much weaker than the response's strongest (below this fraction
#: of its |z|), it is likely a reflection, with the shortest path (the one the singer hears) hidden in
#: the noise before it: the offset is placed :data:`HIDDEN_PATH_LEAD_MS` earlier (see
#: :func:`_lead_for_hidden_path`). 0 switches this off.
WEAK_ONSET_FRACTION = 0.45
#: How much earlier than a weak first arrival the offset is placed (ms).
HIDDEN_PATH_LEAD_MS = 1.0


def _lead_for_hidden_path(resp: _Response) -> tuple[float, float]:
    """The offset for a detected response, and the lead applied (0 when none).

    Sound cannot arrive before its shortest path, so the first arrival found bounds the offset
    from above. When that arrival is strong (a direct path) it is the offset. When it is weak
    against the reflections after it, the shortest path may be a few ms earlier and buried (a
    speaker across the room: the first reflections trail the blocked direct path by the extra
    path length, 1-5 ms in a living room). Against a tolerance of ±5 ms, placing the offset a
    little before such an arrival is the minimax choice over "the arrival is the direct path" and
    "the direct path is up to 6 ms earlier"; tools/eval_align.py --real measures it.
    """
    if resp.onset_strength < WEAK_ONSET_FRACTION and HIDDEN_PATH_LEAD_MS > 0:
        return resp.onset_ms - HIDDEN_PATH_LEAD_MS, HIDDEN_PATH_LEAD_MS
    return resp.onset_ms, 0.0


#: Backing weighting of the second look (see :func:`_second_look`): its local magnitude to this
#: power (1 whitens it); None switches the second look off.
SECOND_EXPONENT: float | None = 0.5
#: How far before the first look's first arrival the second look's may lie (ms).
SECOND_LOOKBACK_MS = 16.0
#: A lag is an arrival of the second look's response when its |z| reaches this fraction of the
#: strongest (its arrivals are broader than the first look's, and so are the backing's echoes of
#: them that CLEAN leaves).
SECOND_ONSET_FRACTION = 0.15
#: Half-width of the lags searched by the second look around the first look's first arrival (ms).
SECOND_RANGE_MS = 40.0


def _second_look(resp: _Response, take_a: np.ndarray, backing_raw: np.ndarray, *, sr_a: int, max_lag: int,
                 band: tuple[float, float], details: dict, allocate: Callable[[int], np.ndarray] | None = None) -> _Response:
    """The detected response's first arrival, read again where the backing is loud.

    The whitened backing (exponent 1) gives sharp arrivals but counts every cell alike, however
    little of the backing is in it: an early arrival a quarter of the strongest can stay below the
    noise (a speaker across the room: the first reflections, or the direct sound of a studio, 5-10 ms
    before the strongest reflection). A backing whitened less (:data:`SECOND_EXPONENT`) weights its
    loud cells more, nearer the matched filter for the bleed, and such arrivals rise above the noise
    (at the price of broader arrivals and more of the backing's own structure, so it never detects
    or replaces a response: it only moves the first arrival earlier, by at most
    :data:`SECOND_LOOKBACK_MS`). Its evidence is in ``details['second_look']``.
    """
    exponent = SECOND_EXPONENT if SECOND_EXPONENT is not None else 1.0
    corr = _correlate(take_a, _tf_weight(backing_raw, exponent=exponent, allocate=allocate), sr_a=sr_a, max_lag=max_lag,
                      band_hz=band)
    if corr.used_windows == 0:
        return resp
    z, lags_ms = _lag_order(corr.summed, corr.max_lag, sr_a)
    ez = _response_energy(z, sr_a)
    second = _find_response(z, ez, lags_ms, sr_a=sr_a, center_ms=resp.onset_ms, half_range_ms=SECOND_RANGE_MS,
                            kernel=corr.kernel, onset_fraction=SECOND_ONSET_FRACTION)
    earlier = second.via is not None and resp.onset_ms - SECOND_LOOKBACK_MS <= second.onset_ms < resp.onset_ms - 0.5
    details["second_look"] = {"exponent": exponent, "first_arrival_ms": second.onset_ms, "onset_strength": second.onset_strength,
                              "detected_by": second.via, "used": earlier, "first_look_arrival_ms": resp.onset_ms}
    return replace(resp, onset_ms=second.onset_ms, onset_strength=second.onset_strength) if earlier else resp


def _onset_look(resp: _Response, take_plain: np.ndarray, backing_raw: np.ndarray, backing_w: np.ndarray,
                z_sharp: np.ndarray, *, sr_a: int, max_lag: int, band: tuple[float, float],
                details: dict, allocate: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, _Response]:
    """The detected response's first arrival, placed on a take weighting that leaves the bleed out.

    Dividing the take by its local power (the matched filter against the voice) also divides the
    bleed by its own power where the bleed is most of a cell: the bleed path ``H`` then reaches the
    correlation as ``H / |H|**2 = 1 / conj(H)``, whose early reflections come out *mirrored before*
    the direct sound (a reflection 3.6 ms after it gives an arrival 3.6 ms before it, as strong as
    the reflection; firmware/docs/alignment.md). With the bleed found, the backing on the take's
    timeline says which cells it fills; there the magnitude is taken over
    :data:`BLEED_CELL_SMOOTH` (flat across the comb of reflections within a few ms), elsewhere as
    before. Only the response's arrivals are read again, within :data:`SECOND_LOOKBACK_MS` of the
    first look's. Returns the re-weighted take (the second look reads it too) and the response;
    the evidence is in ``details['onset_look']``.
    """
    shift = int(round(resp.onset_ms * sr_a / 1000.0))
    take_w = _tf_weight(take_plain, exponent=TAKE_EXPONENT, bleed=(backing_raw, shift), allocate=allocate)
    corr = _correlate(take_w, backing_w, sr_a=sr_a, max_lag=max_lag, band_hz=band)
    if corr.used_windows == 0:
        return take_w, resp
    z, lags_ms = _lag_order(corr.summed, corr.max_lag, sr_a)
    ez = _response_energy(z, sr_a)
    look = _find_response(z, ez, lags_ms, sr_a=sr_a, center_ms=resp.onset_ms, half_range_ms=SECOND_RANGE_MS,
                          kernel=corr.kernel)
    used = look.via is not None and abs(look.onset_ms - resp.onset_ms) <= SECOND_LOOKBACK_MS
    mirror = None
    if used and look.onset_ms > resp.onset_ms + 0.5:
        # Later than the sharp weighting's first arrival: only when that arrival is the mirror of a
        # reflection, i.e. the wide look shows an arrival as far after its onset as the sharp one lay
        # before it, at least about as strong (a real weak first arrival has no such twin).
        # (the sharp one may be the second mirror, at twice the reflection's delay before the direct sound)
        mirror = any(_is_mirror_twin(z, z_sharp, lags_ms, onset_ms=look.onset_ms, tau_ms=(look.onset_ms - resp.onset_ms) / k,
                                     sharp_peak_ms=resp.peak_ms, sharp_strength=resp.onset_strength)
                     for k in (1, 2))
        used = mirror
    details["onset_look"] = {"first_arrival_ms": look.onset_ms, "onset_strength": look.onset_strength,
                             "detected_by": look.via, "used": used, "detection_arrival_ms": resp.onset_ms,
                             "mirror": mirror}
    if not used:
        return take_w, resp
    return take_w, replace(resp, onset_ms=look.onset_ms, onset_strength=look.onset_strength, peak_ms=look.peak_ms)


def _is_mirror_twin(z: np.ndarray, z_sharp: np.ndarray, lags_ms: np.ndarray, *, onset_ms: float, tau_ms: float,
                    sharp_peak_ms: float, sharp_strength: float) -> bool:
    """Whether the wide look (``z``) has an arrival ``tau_ms`` after its onset that the sharp
    look (``z_sharp``) lacks (``1 / conj(H)`` cancels the reflection it mirrors): relative to the wide
    look's onset, at least :data:`MIRROR_STRENGTH` of the sharp first arrival's strength (that one
    relative to the sharp look's strongest arrival), and in the sharp look, relative to its
    strongest, under :data:`MIRROR_STRENGTH` of the wide one.
    """
    near = np.abs(lags_ms - (onset_ms + tau_ms)) <= MIRROR_TOLERANCE_MS
    if not near.any():
        return False
    k0 = int(np.argmin(np.abs(lags_ms - onset_ms)))
    ks = int(np.argmin(np.abs(lags_ms - sharp_peak_ms)))
    twin = float(np.max(np.abs(z[near]))) / max(float(abs(z[k0])), 1e-12)
    sharp_twin = float(np.max(np.abs(z_sharp[near]))) / max(float(abs(z_sharp[ks])), 1e-12)
    return twin >= MIRROR_STRENGTH * sharp_strength and sharp_twin < MIRROR_STRENGTH * twin


def _detected_confidence(resp: _Response, agreement: float, n_windows: int) -> float:
    """Confidence of a response from whichever detector is more sure of it."""
    return max(_response_confidence(resp.energy_z, resp.ratio, agreement, n_windows),
               _bleed_confidence(resp.peak_z, resp.peak_ratio, agreement, n_windows))


def _response_confidence(energy_z: float, ratio: float, agreement: float, n_windows: int) -> float:
    """Probability-like confidence that a detected response is the bleed at the right offset.

    Calibrated on tools/eval_align.py --real: the energy of a real response sits far above the
    detection bar (median ~60), the null stays below 5; a competitor nearly as strong elsewhere
    (music that repeats) makes the choice uncertain.
    """
    p_height = 1.0 / (1.0 + math.exp(-(energy_z - (RESPONSE_DETECT_Z + 2.0)) / 1.5))
    p_unique = min(1.0, max(0.0, (ratio - 1.0) / (2.0 * (RESPONSE_RATIO - 1.0))))
    conf = p_height * (0.4 + 0.6 * p_unique)
    if n_windows >= 3:
        conf *= 0.8 + 0.2 * agreement
    return float(min(0.99, max(0.0, conf)))


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def estimate_offset(
    take: np.ndarray,
    backing: np.ndarray,
    *,
    sr: int,
    latency_ms: float | None = None,
    max_offset_ms: float = 1000.0,
    allocate: Callable[[int], np.ndarray] | None = None,
) -> Alignment:
    """Estimate how much the take lags the backing.

    Parameters
    ----------
    take : np.ndarray
        Mono float32 take, ``(samples,)``, at least 0.5 s long.
    backing : np.ndarray
        Backing track, ``(samples,)`` or ``(channels, samples)``, same rate as ``take``.
    sr : int
        Sample rate of both (the engine passes 48000).
    latency_ms : float, optional
        Calibrated round-trip latency of the phone setup, used when the take has no (or too
        little) backing bleed to measure the offset directly.
    max_offset_ms : float
        The offset is searched within ±max_offset_ms (and ±this around ``latency_ms``).
    allocate : callable, optional
        ``allocate(size)`` returns a zeroed float32 buffer for the take- and backing-length
        weighted signals (the pipeline gives a long take's file-backed ones); default: in memory.

    Returns
    -------
    Alignment
        ``method='bleed'`` when the backing was found in the take; ``'calibrated+refined'`` when a
        weak bleed peak was found near the calibrated latency; ``'calibrated'`` when only the
        calibration is known; ``'none'`` (offset 0, confidence 0) with neither.

    Raises
    ------
    AlignmentError
        Empty, non-finite or too short input, or a bad ``sr``/``max_offset_ms``.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16000
    >>> rng = np.random.default_rng(1)
    >>> backing = rng.standard_normal(4 * sr).astype(np.float32)
    >>> voice = rng.standard_normal(4 * sr).astype(np.float32)
    >>> estimate_offset(voice, backing, sr=sr, latency_ms=180.0).method   # headphones: no bleed
    'calibrated'
    """
    take, backing_mono = _check_inputs(take, backing, sr, max_offset_ms)
    if latency_ms is not None and not math.isfinite(latency_ms):
        raise AlignmentError(f"latency_ms must be a finite number of milliseconds or None, got {latency_ms!r}")

    sr_a = min(ANALYSIS_SR, int(sr))
    band = (BAND_HZ[0], min(BAND_HZ[1], 0.45 * sr_a))
    # Search around 0, widened to include the calibrated latency if it lies further out.
    center = 0.0
    if latency_ms is not None and abs(latency_ms) > max_offset_ms * 0.5:
        center = float(latency_ms)
    max_lag_ms = max_offset_ms + abs(center)
    max_lag = int(math.ceil(max_lag_ms * sr_a / 1000.0))

    take_a = _decimate(take, sr, sr_a, rail=_clip_rail(take))
    # Only the stretch of backing the take can line up with is needed.
    needed = int(math.ceil((take.size / sr + max_lag_ms / 1000.0 + WINDOW_S) * sr)) + 1
    backing_a = _decimate(backing_mono, sr, sr_a, stop=needed)

    details: dict[str, Any] = {
        "search_range_ms": [center - max_offset_ms, center + max_offset_ms],
        "analysis_sr": sr_a,
        "band_hz": list(band),
        "latency_ms": latency_ms,
    }
    if not np.any(take_a) or not np.any(backing_a[: take_a.size + max_lag]):
        silent = "take" if not np.any(take_a) else "backing"
        details["reason"] = f"the {silent} is silent where they overlap; nothing to correlate"
        return _fallback(latency_ms, details)

    # A take recorded at a low rate (8 kHz) has nothing above its Nyquist frequency; the take's
    # weighting would blow its empty cells up to dominate the correlation, so the band stops there.
    band = _effective_band(take_a, sr_a, band)
    details["band_hz"] = list(band)
    # Matched-filter weighting (see module doc): take by its local power, backing whitened.
    take_plain = take_a
    take_a = _tf_weight(take_a, exponent=TAKE_EXPONENT, allocate=allocate)
    backing_raw = backing_a
    backing_a = _tf_weight(backing_raw, exponent=BACKING_EXPONENT, allocate=allocate)
    corr = _correlate(take_a, backing_a, sr_a=sr_a, max_lag=max_lag, band_hz=band)
    details["windows"] = corr.used_windows
    details["window_s"] = round(corr.window_s, 3)
    if corr.used_windows == 0:
        details["reason"] = "no window with both take and backing audio"
        return _fallback(latency_ms, details)

    in_range = None
    if center != 0.0:
        in_range = max_offset_ms
    z, lags_ms = _lag_order(corr.summed, corr.max_lag, sr_a)
    ez = _response_energy(z, sr_a)
    resp = _find_response(z, ez, lags_ms, sr_a=sr_a, center_ms=center, half_range_ms=in_range, kernel=corr.kernel)
    agreement, window_lags = _window_agreement(corr.window_peaks, max_lag=max_lag, sr_a=sr_a, lag_ms=resp.onset_ms)
    # Windows agree when their own peak lies within the response (the onset or a reflection after it).
    window_lags_arr = np.asarray(window_lags)
    if window_lags_arr.size:
        agreement = float(np.mean((window_lags_arr >= resp.onset_ms - AGREEMENT_MS)
                                  & (window_lags_arr <= resp.onset_ms + RESPONSE_SPAN_MS[1])))
    if resp.via == "peak" and corr.used_windows >= 3 and agreement < PEAK_MIN_AGREEMENT:
        # A single high lag that most windows do not see: music whose rhythm lines up with the
        # voice's by chance (a generated headphone take gave z 6.7 at one lag, one window of four).
        details["rejected_peak"] = {"offset_ms": resp.peak_ms, "peak_z": resp.peak_z, "window_agreement": agreement}
        resp = replace(resp, via=None)
    details.update(
        peak_z=resp.peak_z,
        peak_ratio=resp.peak_ratio,
        peak_offset_ms=resp.peak_ms,
        response_energy_z=resp.energy_z,
        response_ratio=resp.ratio,
        competitor_offset_ms=resp.competitor_ms,
        window_agreement=agreement,
        window_offsets_ms=window_lags,
        candidates=resp.candidates,
    )
    if resp.via is not None:
        conf = _detected_confidence(resp, agreement, corr.used_windows)
        if latency_ms is not None:
            details["calibration_error_ms"] = resp.onset_ms - latency_ms
        details["detected_by"] = resp.via
        if BLEED_CELL_SMOOTH is not None:
            del take_a  # the sharp weighting's take is not read again (a 15-minute take: 58 MB)
            take_a, resp = _onset_look(resp, take_plain, backing_raw, backing_a, z, sr_a=sr_a, max_lag=max_lag, band=band,
                                       details=details, allocate=allocate)
        details["path"] = "direct" if resp.peak_ms - resp.onset_ms <= 1.0 else "room (strongest arrival later than the first)"
        if SECOND_EXPONENT is not None:
            resp = _second_look(resp, take_a, backing_raw, sr_a=sr_a, max_lag=max_lag, band=band, details=details,
                                allocate=allocate)
        offset, lead = _lead_for_hidden_path(resp)
        details["first_arrival_ms"] = resp.onset_ms
        details["onset_strength"] = resp.onset_strength
        if lead:
            details["hidden_path_lead_ms"] = lead
        return Alignment(offset_ms=offset, method="bleed", confidence=conf, details=details)

    if latency_ms is not None:
        near = _find_response(z, ez, lags_ms, sr_a=sr_a, center_ms=float(latency_ms), half_range_ms=REFINE_RANGE_MS,
                              kernel=corr.kernel, energy_bar=RESPONSE_REFINE_Z, peak_bar=REFINE_Z)
        details.update(refine_range_ms=REFINE_RANGE_MS, refine_energy_z=near.energy_z, refine_peak_z=near.peak_z,
                       refine_offset_ms=near.onset_ms)
        if near.via is not None:
            # Weak bleed where the calibration says it should be: trust it more than either alone.
            excess = max(near.energy_z - RESPONSE_REFINE_Z, 3.0 * (near.peak_z - REFINE_Z))
            conf = float(min(0.9, CALIBRATED_CONFIDENCE + (1 - CALIBRATED_CONFIDENCE) * (1 - math.exp(-excess / 3.0))))
            return Alignment(offset_ms=near.onset_ms, method="calibrated+refined", confidence=conf, details=details)
        details["reason"] = "no bleed of the backing found in the take; using the calibrated latency"
        return Alignment(offset_ms=float(latency_ms), method="calibrated", confidence=CALIBRATED_CONFIDENCE, details=details)

    weak = (resp.energy_z < RESPONSE_DETECT_Z and resp.peak_z < DETECT_Z) or "rejected_peak" in details
    details["bleed_evidence"] = "none" if weak else "ambiguous"
    details["reason"] = (
        ("no bleed of the backing found in the take" if weak else
         f"the backing is heard in the take at {resp.onset_ms:.0f} ms but also almost as strongly at "
         f"{resp.competitor_ms:.0f} ms (the music repeats), so the offset is ambiguous")
        + " and no calibrated latency was given; give the phone's latency (--latency-ms, from the app's latency "
        "calibration), or record with the phone speaker on so the backing is heard in the take"
    )
    details["best_guess_ms"] = resp.onset_ms
    details["best_guess_confidence"] = _detected_confidence(resp, agreement, corr.used_windows) * (0.5 if weak else 1.0)
    return Alignment(offset_ms=0.0, method="none", confidence=0.0, details=details)


def _fallback(latency_ms: float | None, details: dict) -> Alignment:
    if latency_ms is not None:
        return Alignment(offset_ms=float(latency_ms), method="calibrated", confidence=CALIBRATED_CONFIDENCE, details=details)
    return Alignment(offset_ms=0.0, method="none", confidence=0.0, details=details)


def apply_offset(take: np.ndarray, *, offset_ms: float, sr: int, length: int | None = None) -> np.ndarray:
    """Shift the take so it lines up with the backing.

    A late take (``offset_ms > 0``) loses its first ``offset_ms`` worth of samples; an early one
    gets that many zeros in front. The shift is rounded to whole samples (±0.01 ms at 48 kHz).

    Parameters
    ----------
    take : np.ndarray
        ``(samples,)`` or ``(channels, samples)``.
    offset_ms : float
        As in :attr:`Alignment.offset_ms`: positive when the take is late.
    sr : int
        Sample rate.
    length : int, optional
        Pad with zeros or trim the result to this many samples (e.g. the backing's length).

    Examples
    --------
    >>> import numpy as np
    >>> apply_offset(np.arange(1, 6, dtype=np.float32), offset_ms=2.0, sr=1000)
    array([3., 4., 5.], dtype=float32)
    >>> apply_offset(np.arange(1, 4, dtype=np.float32), offset_ms=-1.0, sr=1000, length=5)
    array([0., 1., 2., 3., 0.], dtype=float32)
    """
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AlignmentError(f"sr must be a positive integer sample rate, got {sr!r}")
    if not math.isfinite(offset_ms):
        raise AlignmentError(f"offset_ms must be finite, got {offset_ms!r}")
    if length is not None and length < 0:
        raise AlignmentError(f"length must be >= 0 samples or None, got {length}")
    y = np.asarray(take, dtype=np.float32)
    shift = int(round(offset_ms * sr / 1000.0))
    if shift >= 0:
        out = y[..., shift:]
    else:
        pad = np.zeros((*y.shape[:-1], -shift), dtype=np.float32)
        out = np.concatenate([pad, y], axis=-1)
    if length is not None:
        n = out.shape[-1]
        if n > length:
            out = out[..., :length]
        elif n < length:
            out = np.concatenate([out, np.zeros((*out.shape[:-1], length - n), dtype=np.float32)], axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)
