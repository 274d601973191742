"""Level, spectral and sibilance analysis of a vocal take and of a backing track.

The vocal chain (:mod:`melisma.render.chain`) is set from these numbers: the compressor
threshold from the level of loud phrases, the de-esser band and threshold from where this
voice's sibilance sits (2-10 kHz, found per voice), corrective EQ from the spectral balance,
the delay time from the backing's tempo.

Spectra are computed once, frame by frame in chunks, and reduced at once to 1/12-octave band
powers, so a 3-minute take needs a few MB, not a full spectrogram.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.voice import analyze_voice
>>> sr = 48000
>>> t = np.arange(2 * sr) / sr
>>> vowel = sum(0.1 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 15)).astype(np.float32)
>>> info = analyze_voice(vowel, sr=sr)
>>> info["loud_phrase_peak_db"] < 0, info["sibilance"]["found"]
(True, False)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dsp
from ..errors import AnalysisError
from ..filter_design import hann

#: Frame and hop of the band analysis (21 ms frames, 10 ms hop at 48 kHz).
N_FFT = 1024
HOP_MS = 10.0
#: Band edges of the spectral-balance summary, in Hz.
BALANCE_BANDS_HZ = {
    "rumble": (40.0, 70.0),  # below any sung fundamental in pop: handling noise, wind, traffic
    "low": (80.0, 200.0),
    "mud": (200.0, 500.0),
    "mid": (500.0, 2000.0),
    "presence": (2000.0, 5000.0),
    "brilliance": (5000.0, 10000.0),
    "air": (10000.0, 16000.0),
}
#: Where sibilance is looked for (fricatives /s/, /sh/, /x/, /c/ sit here).
SIBILANCE_RANGE_HZ = (2000.0, 10000.0)
#: A frame is "active" if within this many dB of the loudest frames; quieter is silence/noise.
ACTIVE_RANGE_DB = 40.0


def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    if audio.ndim != 1:
        raise AnalysisError(f"audio must be (samples,) or (channels, samples), got shape {audio.shape}")
    if not _all_finite(audio):
        raise AnalysisError("audio contains NaN or Inf samples; clean or re-decode the input")
    return audio


def _all_finite(audio: np.ndarray, block: int = 1 << 20) -> bool:
    """Whether every sample is finite, a block at a time (no take-length boolean temporary)."""
    flat = audio.reshape(-1)
    return all(bool(np.isfinite(flat[a : a + block]).all()) for a in range(0, flat.size, block))


#: Samples read at a time by the sweeps over a vocal given as a reader.
VOICE_BLOCK = 1 << 18


def _mono_source(vocal: Any) -> tuple[Any, int]:
    """``(read, n)`` for a vocal given as an array (averaged to mono) or as a mono reader with
    ``read(start, stop)`` and ``shape`` (e.g. a long take's file-backed buffer, read with plain file
    reads so the take is never mapped into memory whole); NaN/Inf samples are refused either way.
    """
    if not hasattr(vocal, "read"):
        audio = _mono(vocal)
        return (lambda a, b: audio[a:b]), int(audio.size)
    shape = tuple(vocal.shape)
    if len(shape) != 1 and not (len(shape) == 2 and shape[0] == 1):
        raise AnalysisError(f"a vocal read in blocks must be mono (samples,), got shape {shape}")
    n = int(shape[-1])

    def read(a: int, b: int) -> np.ndarray:
        return np.asarray(vocal.read(a, min(b, n)), dtype=np.float32).reshape(-1)

    for a in range(0, n, VOICE_BLOCK):
        if not np.isfinite(np.sum(read(a, a + VOICE_BLOCK), dtype=np.float64)):
            raise AnalysisError("audio contains NaN or Inf samples; clean or re-decode the input")
    return read, n


def _blocks(read: Any, n: int, block: int = VOICE_BLOCK):
    """``(start, samples)`` over ``0:n`` a block at a time."""
    for a in range(0, n, block):
        yield a, read(a, min(a + block, n))


def _db(power: np.ndarray | float, floor_db: float = -120.0) -> np.ndarray:
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-20)), floor_db)


def _band_edges(sr: int) -> np.ndarray:
    """1/12-octave band edges from 40 Hz to just under Nyquist."""
    top = min(20000.0, 0.49 * sr)
    n = int(math.floor(12 * math.log2(top / 40.0)))
    return 40.0 * 2.0 ** (np.arange(n + 1) / 12.0)


def band_powers(audio: np.ndarray, *, sr: int, n_fft: int = N_FFT, hop_ms: float = HOP_MS,
                chunk_frames: int = 512) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-frame powers in 1/12-octave bands (mean square per band, Hann window).

    Returns ``(powers, edges_hz, hop_length)`` with ``powers`` shaped ``(frames, bands)``.

    >>> p, edges, hop = band_powers(np.zeros(48000, np.float32), sr=48000)
    >>> p.shape[1] == len(edges) - 1, hop
    (True, 480)
    """
    audio = _mono(audio)
    return _band_powers_from(lambda a, b: audio[a:b], audio.size, sr=sr, n_fft=n_fft, hop_ms=hop_ms,
                             chunk_frames=chunk_frames)


def _band_powers_from(read, n_samples: int, *, sr: int, n_fft: int = N_FFT, hop_ms: float = HOP_MS,
                      chunk_frames: int = 512) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`band_powers` of a mono signal read piece by piece: ``read(a, b)`` gives samples
    ``a:b`` (zeros past the end), so the signal never needs to be in memory whole.
    """
    hop_length = max(1, int(round(sr * hop_ms / 1000.0)))
    edges = _band_edges(sr)
    n_samples = max(n_samples, n_fft)  # a short signal is zero-padded to one frame
    n_frames = 1 + (n_samples - n_fft) // hop_length
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band_of_bin = np.searchsorted(edges, freqs, side="right") - 1
    valid = (band_of_bin >= 0) & (band_of_bin < len(edges) - 1)
    # Sparse-as-dense (bins x bands) 0/1 matrix: one matmul reduces a chunk of spectra to bands.
    reducer = np.zeros((freqs.size, len(edges) - 1), dtype=np.float32)
    reducer[np.nonzero(valid)[0], band_of_bin[valid]] = 1.0
    window = hann(n_fft).astype(np.float32)
    norm = np.float32(2.0 / (n_fft * np.sum(window**2)))
    out = np.empty((n_frames, len(edges) - 1), dtype=np.float32)
    for start in range(0, n_frames, chunk_frames):
        stop = min(n_frames, start + chunk_frames)
        piece = _read_padded(read, start * hop_length, (stop - 1) * hop_length + n_fft)
        frames = np.lib.stride_tricks.sliding_window_view(piece, n_fft)[::hop_length]
        spec = np.fft.rfft(frames * window, axis=1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32) * norm
        out[start:stop] = power @ reducer
    return out, edges, hop_length


def _read_padded(read, a: int, b: int) -> np.ndarray:
    piece = np.asarray(read(a, b), dtype=np.float32)
    if piece.size < b - a:
        piece = np.concatenate([piece, np.zeros(b - a - piece.size, np.float32)])
    return piece


def _sum_bands(powers: np.ndarray, edges: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    centres = np.sqrt(edges[:-1] * edges[1:])
    sel = (centres >= lo_hz) & (centres < hi_hz)
    return powers[:, sel].sum(axis=1)


def _loudness_lufs(read: Any, n: int, sr: int) -> float | None:
    """Integrated loudness of a mono signal read in blocks (the project's BS.1770-4 meter); None if
    under 0.4 s or silent. Block by block: no take-sized filtered copies.
    """
    from .loudness import KWeightedHops

    if n < int(0.4 * sr):
        return None
    hops = KWeightedHops(sr, channels=1)
    for _a, block in _blocks(read, n):
        hops.add(block)
    value = hops.integrated_lufs()
    return round(float(value), 2) if np.isfinite(value) else None


#: Segment length of the long-term spectrum (5.9 Hz resolution at 48 kHz): fine enough that a
#: bass voice's 80-100 Hz fundamental does not leak into the 40-70 Hz "rumble" band, as it does
#: with the 1024-point frames.
LONG_TERM_NPERSEG = 8192


def long_term_psd(audio: np.ndarray, *, sr: int, nperseg: int = LONG_TERM_NPERSEG,
                  batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum (Hann, 50 % overlap), in batches so memory stays small.

    Returns ``(freqs_hz, power)`` with ``power`` the mean square per frequency bin (it sums to
    the signal's mean square).

    >>> f, p = long_term_psd(np.ones(48000, np.float32), sr=48000)
    >>> float(f[np.argmax(p)])
    0.0
    """
    audio = _mono(audio)
    return _long_term_psd_from(lambda a, b: audio[a:b], audio.size, sr=sr, nperseg=nperseg, batch=batch)


def _long_term_psd_from(read, n_samples: int, *, sr: int, nperseg: int = LONG_TERM_NPERSEG,
                        batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """:func:`long_term_psd` of a mono signal read piece by piece (see :func:`_band_powers_from`)."""
    nperseg = int(min(nperseg, max(256, 2 ** int(math.floor(math.log2(max(n_samples, 256)))))))
    n_samples = max(n_samples, nperseg)
    hop = nperseg // 2
    window = hann(nperseg).astype(np.float32)
    n_segments = 1 + (n_samples - nperseg) // hop
    total = np.zeros(nperseg // 2 + 1)
    for start in range(0, n_segments, batch):
        stop = min(n_segments, start + batch)
        piece = _read_padded(read, start * hop, (stop - 1) * hop + nperseg)
        segments = np.lib.stride_tricks.sliding_window_view(piece, nperseg)[::hop]
        spec = np.fft.rfft(segments * window, axis=1)
        total += (spec.real**2 + spec.imag**2).sum(axis=0)
    power = total / n_segments / (nperseg * np.sum(window.astype(np.float64) ** 2))
    power[1:-1] *= 2.0  # one-sided
    return np.fft.rfftfreq(nperseg, 1.0 / sr), power


def _spectral_balance(freqs: np.ndarray, power: np.ndarray) -> dict[str, float]:
    """Long-term band energies, in dB relative to the total."""
    total = float(power.sum())
    if total <= 0:
        return {name: -120.0 for name in BALANCE_BANDS_HZ}
    return {name: round(float(_db(power[(freqs >= lo) & (freqs < hi)].sum() / total)), 2)
            for name, (lo, hi) in BALANCE_BANDS_HZ.items()}


def _third_octave_spectrum(freqs: np.ndarray, power: np.ndarray, sr: int) -> dict[str, list[float]]:
    """Long-term power in 1/3-octave bands from 25 Hz (dBFS), for EQ level estimates."""
    top = min(20000.0, 0.49 * sr)
    n = int(math.floor(3 * math.log2(top / 25.0)))
    edges = 25.0 * 2.0 ** (np.arange(n + 1) / 3.0)
    band = np.searchsorted(edges, freqs, side="right") - 1
    ok = (band >= 0) & (band < n)
    sums = np.bincount(band[ok], weights=power[ok], minlength=n)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return {"centre_hz": [round(float(c), 1) for c in centres], "level_db": [round(float(v), 2) for v in _db(sums)]}


def _frame_peaks_db(read: Any, n_samples: int, hop_length: int) -> np.ndarray:
    """Peak |sample| per hop (10 ms), in dBFS: the level a peak-sensing compressor reacts to."""
    n = n_samples // hop_length
    if n == 0:
        return np.array([_db(float(np.max(np.abs(read(0, n_samples)), initial=0.0)) ** 2)])
    peaks = np.empty(n)
    step = max(1, VOICE_BLOCK // hop_length) * hop_length
    for a, block in _blocks(read, n * hop_length, step):
        hops = block.reshape(-1, hop_length)
        peaks[a // hop_length : a // hop_length + hops.shape[0]] = np.maximum(hops.max(axis=1), -hops.min(axis=1))
    return _db(peaks**2)


#: The de-esser's split sits this factor outside the sibilance band on each side: LR4 filters
#: are gentle near their corners, and a split right at the band's edges would pass only ~40 %
#: of a narrow band (and so could not turn it down by much).
SPLIT_MARGIN = 1.6


def _split_edges(lo_hz: float, hi_hz: float, sr: int) -> tuple[float, float]:
    return max(500.0, lo_hz / SPLIT_MARGIN), min(0.45 * sr, hi_hz * SPLIT_MARGIN)


def sibilance_band_sos(lo_hz: float, hi_hz: float, *, sr: int) -> np.ndarray:
    """Band-pass of the de-esser for the sibilance band ``lo_hz``...``hi_hz``: 4th-order
    Linkwitz-Riley high-pass and low-pass at :data:`SPLIT_MARGIN` outside the band (-6 dB
    there), as second-order sections.

    Linkwitz-Riley, because the band and the rest then add up to an all-pass (see
    :func:`sibilance_allpass_sos`), so turning the band down leaves the rest untouched.

    >>> sibilance_band_sos(5000.0, 9000.0, sr=48000).shape
    (4, 6)
    """
    lo_split, hi_split = _split_edges(lo_hz, hi_hz, sr)
    hp = dsp.design("butter", 2, lo_split, "highpass", sr, "sos")
    lp = dsp.design("butter", 2, hi_split, "lowpass", sr, "sos")
    return np.concatenate([hp, hp, lp, lp])


def sibilance_detector_sos(lo_hz: float, hi_hz: float, *, sr: int) -> np.ndarray:
    """The de-esser's detector: a Butterworth band-pass on the sibilance band itself, narrower
    than the split so the vowels' formants (F3/F4 around 2.5-4 kHz) do not trigger it.

    >>> sibilance_detector_sos(5000.0, 9000.0, sr=48000).shape
    (2, 6)
    """
    return dsp.design("butter", 2, [lo_hz, min(hi_hz, 0.45 * sr)], "bandpass", sr, "sos")


def sibilance_allpass_sos(lo_hz: float, hi_hz: float, *, sr: int) -> np.ndarray:
    """The all-pass that the Linkwitz-Riley split of :func:`sibilance_band_sos` sums to.

    LR4 low-pass + high-pass at f equals the 2nd-order all-pass whose numerator is the
    Butterworth denominator reversed; the split at both edges gives two such sections.

    >>> sibilance_allpass_sos(5000.0, 9000.0, sr=48000).shape
    (2, 6)
    """
    sections = []
    for f in _split_edges(lo_hz, hi_hz, sr):
        _, a = dsp.design("butter", 2, f, "lowpass", sr, "ba")
        sections.append(np.concatenate([a[::-1], a]))
    return np.asarray(sections)


def _find_sibilance(read: Any, n_samples: int, powers: np.ndarray, edges: np.ndarray, active: np.ndarray,
                    sr: int, hop_length: int) -> tuple[dict[str, Any], np.ndarray]:
    """Find the sibilant frames and this voice's sibilance band in 2-10 kHz."""
    lo_lim, hi_lim = SIBILANCE_RANGE_HZ[0], min(SIBILANCE_RANGE_HZ[1], 0.45 * sr)
    hf = _sum_bands(powers, edges, lo_lim, hi_lim)
    lf = _sum_bands(powers, edges, 80.0, 1500.0)
    ratio_db = _db(hf) - _db(lf)
    result: dict[str, Any] = {"found": False, "lo_hz": 5000.0, "hi_hz": 9000.0, "centre_hz": 6700.0,
                              "frames": 0, "fraction": 0.0, "excess_db": 0.0, "sibilant_to_vowel_db": None,
                              "band_level_sibilant_db": None, "band_level_vowel_p95_db": None}
    if not np.any(active):
        return result, np.zeros_like(active)
    # Sibilants are noise with most energy above 2 kHz: HF at least as strong as LF, and far
    # above this voice's usual HF/LF ratio (vowels sit tens of dB below).
    typical = float(np.median(ratio_db[active]))
    sibilant = active & (ratio_db > max(0.0, typical + 12.0))
    vowel = active & ~sibilant & (ratio_db < typical + 6.0)
    result["frames"] = int(sibilant.sum())
    result["fraction"] = round(float(sibilant.sum() / max(1, active.sum())), 4)
    if sibilant.sum() < 3:
        return result, sibilant

    centres = np.sqrt(edges[:-1] * edges[1:])
    in_range = (centres >= lo_lim) & (centres < hi_lim)
    sib_spec = powers[sibilant][:, in_range].mean(axis=0)
    # Per-band power density (the bands widen with frequency) smoothed over +/-1 band.
    density = sib_spec / np.diff(edges)[in_range]
    density = np.convolve(density, np.ones(3) / 3.0, mode="same")
    density_db = _db(density)
    peak = int(np.argmax(density_db))
    above = density_db >= density_db[peak] - 6.0
    lo_i = peak
    while lo_i > 0 and above[lo_i - 1]:
        lo_i -= 1
    hi_i = peak
    while hi_i < above.size - 1 and above[hi_i + 1]:
        hi_i += 1
    band_edges = edges[:-1][in_range], edges[1:][in_range]
    lo_hz, hi_hz = float(band_edges[0][lo_i]), float(band_edges[1][hi_i])
    # A de-esser band narrower than ~half an octave misses the spread of real fricatives.
    if hi_hz / lo_hz < 1.4:
        mid = math.sqrt(lo_hz * hi_hz)
        lo_hz, hi_hz = max(lo_lim, mid / 1.19), min(hi_lim, mid * 1.19)
    sel = density[lo_i:hi_i + 1]
    centre = float(np.exp(np.sum(np.log(centres[in_range][lo_i:hi_i + 1]) * sel) / np.sum(sel)))

    # In-band level as the de-esser's detector sees it (same band-pass, 10 ms RMS), per frame.
    # Filtered block by block (filter state carried over), so no take-sized band signal exists.
    sos = sibilance_detector_sos(lo_hz, hi_hz, sr=sr).astype(np.float32)
    zi = np.zeros((sos.shape[0], 2), np.float32)
    n = min(n_samples // hop_length, powers.shape[0])
    band_energy = np.empty(n)
    step = 1024 * hop_length
    for a in range(0, n * hop_length, step):
        b = min(a + step, n * hop_length)
        band, zi = dsp.sosfilt(sos, read(a, b), zi)
        hops = band.reshape(-1, hop_length)
        band_energy[a // hop_length:b // hop_length] = np.einsum("ij,ij->i", hops, hops, dtype=np.float64)
    band_db = _db(band_energy / hop_length)
    full_db = _db(powers[:n].sum(axis=1))
    sib_n, vowel_n = sibilant[:n], vowel[:n]
    sib_level = float(np.median(band_db[sib_n])) if sib_n.any() else None
    vowel_p95 = float(np.percentile(band_db[vowel_n], 95)) if vowel_n.any() else -120.0
    result.update(
        found=True, lo_hz=round(lo_hz, 1), hi_hz=round(hi_hz, 1), centre_hz=round(centre, 1),
        band_level_sibilant_db=None if sib_level is None else round(sib_level, 2),
        band_level_vowel_p95_db=round(vowel_p95, 2),
        excess_db=0.0 if sib_level is None else round(sib_level - vowel_p95, 2),
        sibilant_to_vowel_db=(round(float(np.median(full_db[sib_n]) - np.median(full_db[vowel_n])), 2)
                              if sib_n.any() and vowel_n.any() else None),
    )
    return result, sibilant


def _peak(read: Any, n: int) -> float:
    """Largest magnitude of a signal read in blocks (0 when empty): no take-length temporary."""
    return max((float(np.max(np.abs(block))) for _a, block in _blocks(read, n) if block.size), default=0.0)


def _onset_strength(powers: np.ndarray, rows: int = 8192) -> np.ndarray:
    """Half-wave rectified rise of log band energy from frame to frame, summed over bands; rows of
    ``powers`` (frames, bands) a block at a time (each difference needs only its own two rows).
    """
    n = powers.shape[0]
    if n <= 1:
        return np.zeros(0)
    onset = np.empty(n - 1, dtype=np.result_type(powers.dtype, np.float32))
    for a in range(0, n - 1, rows):
        b = min(a + rows, n - 1)
        log_p = np.log(powers[a : b + 1] + 1e-10)
        onset[a:b] = np.maximum(np.diff(log_p, axis=0), 0.0).sum(axis=1)
    return onset


def compressor_detector_db(audio: np.ndarray, *, sr: int, hop_length: int, attack_ms: float = 10.0,
                           release_ms: float = 120.0) -> np.ndarray:
    """Per-hop level (dBFS) seen by pedalboard's Compressor detector, measured, not modelled.

    A probe compressor (threshold -80 dB, ratio 2) applies a gain of ``-(level + 80) / 2`` dB
    sample by sample, so the level follows from output/input wherever the input is not tiny.
    This keeps the threshold the chain picks right whatever the voice's crest factor.
    """
    audio = _mono(audio)
    return _compressor_detector_from(lambda a, b: audio[a:b], audio.size, sr=sr, hop_length=hop_length,
                                     attack_ms=attack_ms, release_ms=release_ms)


def _compressor_detector_from(read: Any, n_samples: int, *, sr: int, hop_length: int, attack_ms: float,
                              release_ms: float) -> np.ndarray:
    """:func:`compressor_detector_db` of a mono signal read in blocks."""
    import pedalboard

    probe = pedalboard.Compressor(threshold_db=-80.0, ratio=2.0, attack_ms=attack_ms, release_ms=release_ms)
    n = n_samples // hop_length
    level = np.full(n, -120.0)
    # Median over each hop of the gain read at samples that are not near a zero crossing (a
    # clean ratio); in chunks (the probe streams), so a long take needs little extra memory.
    chunk = 1024
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        piece = np.ascontiguousarray(read(start * hop_length, stop * hop_length), dtype=np.float32)
        out = probe(piece[None, :], sr, reset=start == 0)[0]
        x = np.abs(piece).reshape(stop - start, hop_length)
        y = np.abs(out).reshape(stop - start, hop_length)
        usable = (x > 0.25 * x.max(axis=1, keepdims=True)) & (x > 1e-5)
        gain_db = np.where(usable, 20.0 * np.log10(np.maximum(y, 1e-12) / np.maximum(x, 1e-12)), np.nan)
        counts = usable.sum(axis=1)
        # nanmedian without its all-NaN warnings: sort, NaNs go last, pick the middle of the rest.
        gain_db.sort(axis=1)
        rows = np.nonzero(counts)[0]
        mid_lo = gain_db[rows, (counts[rows] - 1) // 2]
        mid_hi = gain_db[rows, counts[rows] // 2]
        level[start + rows] = -2.0 * 0.5 * (mid_lo + mid_hi) - 80.0
    return level


def analyze_voice(vocal: np.ndarray, *, sr: int, compressor_attack_ms: float = 10.0,
                  compressor_release_ms: float = 120.0) -> dict[str, Any]:
    """Analyze a (cleaned, aligned) vocal take for the vocal chain.

    Parameters
    ----------
    vocal : np.ndarray or reader
        ``(samples,)`` or ``(channels, samples)`` float32 (channels are averaged), or a mono reader
        with ``read(start, stop)`` and ``shape`` (a long take's file-backed buffer: read block by
        block, never mapped whole).
    sr : int
        Sample rate in Hz (48000 in the engine).
    compressor_attack_ms, compressor_release_ms : float
        Detector timing for ``loud_phrase_detector_db``; the style presets all use 10/120 ms,
        so the chain's threshold lands where intended.

    Returns
    -------
    dict
        JSON-serialisable: ``loudness_lufs`` (None if unmeasurable), ``active_fraction``,
        ``loud_phrase_peak_db`` / ``loud_phrase_rms_db`` / ``loud_phrase_detector_db`` (95th
        percentile over sung, i.e. active non-sibilant, 10 ms frames of the peak level, the RMS
        level and the level pedalboard's Compressor detector sees, see below; dBFS),
        ``median_phrase_rms_db``, ``dynamic_range_db``
        (95th - 10th percentile of active-frame RMS), ``spectral_balance`` (long-term, dB of each band
        relative to the total: rumble 40-70 Hz, low 80-200 Hz, mud 200-500, mid 0.5-2k, presence 2-5k,
        brilliance 5-10k, air 10-16k), ``long_term_spectrum`` (``centre_hz``, ``level_db``:
        1/3-octave long-term levels, dBFS), and ``sibilance`` (``found``, ``lo_hz``, ``hi_hz``,
        ``centre_hz``, ``excess_db`` = median in-band level of sibilant frames minus the 95th
        percentile in-band level of vowel frames, ``band_level_*_db``, ``sibilant_to_vowel_db``).

    Examples
    --------
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> y = (0.05 * rng.standard_normal(sr)).astype(np.float32)
    >>> sorted(analyze_voice(y, sr=sr)["spectral_balance"])
    ['air', 'brilliance', 'low', 'mid', 'mud', 'presence', 'rumble']
    """
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    read, n_samples = _mono_source(vocal)
    powers, edges, hop_length = _band_powers_from(read, n_samples, sr=sr)
    frame_rms_db = _db(powers.sum(axis=1))
    top = float(np.percentile(frame_rms_db, 99)) if frame_rms_db.size else -120.0
    active = (frame_rms_db > top - ACTIVE_RANGE_DB) & (frame_rms_db > -80.0)
    sibilance, sibilant = _find_sibilance(read, n_samples, powers, edges, active, sr, hop_length)
    # Phrase levels from sung (non-sibilant) frames: esses are the de-esser's job, and it runs
    # before the compressor.
    phrase = active & ~sibilant
    peaks_db = _frame_peaks_db(read, n_samples, hop_length)
    n = min(peaks_db.size, phrase.size)
    act_peaks = peaks_db[:n][phrase[:n]]
    act_rms = frame_rms_db[phrase]
    freqs, psd = _long_term_psd_from(read, n_samples, sr=sr)
    detector_db = _compressor_detector_from(
        read, n_samples, sr=sr, hop_length=hop_length, attack_ms=compressor_attack_ms, release_ms=compressor_release_ms
    )
    m = min(detector_db.size, phrase.size)
    act_detector = detector_db[:m][phrase[:m]]

    def pct(values: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(values, q)), 2) if values.size else None

    result: dict[str, Any] = {
        "sr": int(sr),
        "duration_s": round(n_samples / sr, 3),
        "loudness_lufs": _loudness_lufs(read, n_samples, sr),
        "peak_dbfs": round(float(_db(_peak(read, n_samples) ** 2)), 2),
        "active_fraction": round(float(active.mean()) if active.size else 0.0, 4),
        "loud_phrase_peak_db": pct(act_peaks, 95),
        "loud_phrase_rms_db": pct(act_rms, 95),
        "loud_phrase_detector_db": pct(act_detector, 95),
        "detector_timing_ms": {"attack_ms": float(compressor_attack_ms), "release_ms": float(compressor_release_ms)},
        "median_phrase_rms_db": pct(act_rms, 50),
        "dynamic_range_db": (round(float(np.percentile(act_rms, 95) - np.percentile(act_rms, 10)), 2) if act_rms.size else None),
        "spectral_balance": _spectral_balance(freqs, psd),
        "long_term_spectrum": _third_octave_spectrum(freqs, psd, sr),
        "sibilance": sibilance,
    }
    return result


def _tempo_bpm(onset_env: np.ndarray, frame_rate: float, lo_bpm: float = 70.0, hi_bpm: float = 180.0) -> float | None:
    """Rough tempo from the autocorrelation of an onset-strength envelope."""
    if onset_env.size < int(4 * frame_rate) or not np.any(onset_env > 0):
        return None
    env = onset_env - onset_env.mean()
    n = 1 << int(math.ceil(math.log2(2 * env.size)))
    spec = np.fft.rfft(env, n)
    ac = np.fft.irfft(spec * np.conj(spec), n)[: env.size]
    lags = np.arange(ac.size) / frame_rate
    bpms = np.where(lags > 0, 60.0 / np.maximum(lags, 1e-9), 0.0)
    sel = (bpms >= lo_bpm) & (bpms <= hi_bpm)
    if not np.any(sel) or ac[0] <= 0:
        return None
    # Weight toward ~120 BPM (log-Gaussian) to break the usual octave ambiguity.
    weight = np.exp(-0.5 * (np.log2(np.maximum(bpms, 1e-9) / 120.0) / 0.9) ** 2)
    score = np.where(sel, ac * weight, -np.inf)
    best = int(np.argmax(score))
    if ac[best] / ac[0] < 0.05:
        return None
    # Parabolic interpolation of the lag for a finer estimate.
    if 0 < best < ac.size - 1:
        a, b, c = ac[best - 1], ac[best], ac[best + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        lag = (best + shift) / frame_rate
    else:
        lag = best / frame_rate
    return round(float(60.0 / lag), 1)


def analyze_backing(backing: Any, *, sr: int) -> dict[str, Any]:
    """Analyze the backing track: loudness, spectral balance, rough tempo, stereo width.

    ``backing`` is ``(samples,)`` or ``(channels, samples)`` float32, or a block reader with
    ``shape`` and ``read(start, stop)`` (e.g. :class:`melisma.audio_io.NpyBlockReader` on the
    plan's cache file): it is analyzed block by block either way, so memory stays small.

    Returns a JSON-serialisable dict: ``loudness_lufs``, ``spectral_balance`` (as in
    :func:`analyze_voice`), ``tempo_bpm`` (None if no clear beat), ``stereo_width`` (side/mid
    energy ratio, 0 = mono, 1 = uncorrelated), ``channels``.

    Examples
    --------
    >>> sr = 48000
    >>> clicks = np.zeros(6 * sr, np.float32); clicks[:: sr // 2] = 1.0   # 120 BPM
    >>> round(analyze_backing(clicks, sr=sr)["tempo_bpm"])
    120
    """
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    if isinstance(backing, np.ndarray) or not hasattr(backing, "read"):
        audio = np.asarray(backing, dtype=np.float32)
        if audio.ndim not in (1, 2) or audio.shape[0] < 1:
            raise AnalysisError(f"backing must be (samples,) or (channels, samples), got shape {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise AnalysisError("audio contains NaN or Inf samples; clean or re-decode the input")
        return _analyze_backing_blocks(lambda a, b: audio[..., a:b], audio.shape, sr=sr)
    return _analyze_backing_blocks(backing.read, tuple(backing.shape), sr=sr)


#: Samples read at a time by the block-wise backing analysis.
BACKING_BLOCK = 1 << 18


def _analyze_backing_blocks(read, shape: tuple[int, ...], *, sr: int) -> dict[str, Any]:
    """:func:`analyze_backing` of a signal read in blocks (``read(a, b)`` -> ``(channels, b - a)``
    or ``(b - a,)``): loudness, stereo width and the mono mix-down's spectra without ever holding
    the backing whole (it may come straight from the plan's cache file).
    """
    from .loudness import KWeightedHops

    channels = 1 if len(shape) == 1 else int(shape[0])
    n = int(shape[-1])

    def mono(a: int, b: int) -> np.ndarray:
        block = np.asarray(read(a, min(b, n)) if a < n else np.zeros((channels, 0), np.float32), dtype=np.float32)
        return block if block.ndim == 1 else (block[0] if block.shape[0] == 1 else block.mean(axis=0))

    hops = KWeightedHops(sr, channels=channels) if n >= int(0.4 * sr) else None
    mid_energy = side_energy = 0.0
    for a in range(0, n, BACKING_BLOCK):
        block = np.asarray(read(a, min(n, a + BACKING_BLOCK)), dtype=np.float32)
        if not np.isfinite(np.sum(block, dtype=np.float64)):
            raise AnalysisError("audio contains NaN or Inf samples; clean or re-decode the input")
        if hops is not None:
            hops.add(block)
        if block.ndim == 2 and block.shape[0] >= 2:
            mid = 0.5 * (block[0] + block[1])
            side = 0.5 * (block[0] - block[1])
            mid_energy += float(np.dot(mid.astype(np.float64), mid))
            side_energy += float(np.dot(side.astype(np.float64), side))
    width = side_energy / mid_energy if channels >= 2 and mid_energy > 0 else 0.0
    loudness = None
    if hops is not None:
        value = hops.integrated_lufs()
        loudness = round(float(value), 2) if np.isfinite(value) else None
    powers, _edges, hop_length = _band_powers_from(mono, n, sr=sr)
    # Onset strength: half-wave rectified rise of log band energy, summed over bands.
    onset = _onset_strength(powers)
    return {
        "sr": int(sr),
        "channels": int(channels),
        "duration_s": round(n / sr, 3),
        "loudness_lufs": loudness,
        "spectral_balance": _spectral_balance(*_long_term_psd_from(mono, n, sr=sr)),
        "tempo_bpm": _tempo_bpm(onset, sr / hop_length),
        "stereo_width": round(min(width, 10.0), 4),
    }
