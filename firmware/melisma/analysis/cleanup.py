"""What a phone take needs cleaned: rumble, mains hum, clipping, broadband noise, gating.

Pure functions on a mono take. :func:`analyze_cleanup` returns a JSON-serialisable record that
:mod:`melisma.render.clean` turns into a chain of stages; the pieces (:func:`detect_hum`,
:func:`detect_clipping`, :func:`estimate_noise`, :func:`estimate_rumble`) can be called alone.

Levels are in dB re full scale as RMS (a constant signal of 1.0 is 0 dBFS; a full-scale sine is
-3 dBFS). The noise profile is a power spectral density in dBFS/Hz per band, so a stage can map it
onto any FFT size.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.cleanup import analyze_cleanup
>>> sr = 48000
>>> t = np.arange(6 * sr) / sr
>>> rng = np.random.default_rng(0)
>>> take = (0.2 * np.sin(2 * np.pi * 220 * t) * (t % 1 < 0.6) + 0.02 * np.sin(2 * np.pi * 50 * t)
...         + 0.003 * rng.standard_normal(t.size)).astype(np.float32)
>>> report = analyze_cleanup(take, sr=sr)
>>> report["hum"]["detected"], round(report["hum"]["fundamental_hz"])
(True, 50)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft as sfft

from ..errors import AnalysisError
from ..filter_design import hann

#: Candidate mains frequencies.
MAINS_HZ = (50.0, 60.0)
#: Highest hum harmonic looked for; buzz above this is left to the broadband denoiser.
HUM_MAX_HZ = 1000.0
#: Mains frequency deviates at most this much (relative) from nominal.
MAINS_TOLERANCE = 0.005
#: A hum line must stand this far above the spectrum around it to count.
HUM_PROMINENCE_DB = 8.0
#: Fraction of samples at the rails above which clipping is called heavy.
HEAVY_CLIPPING_FRACTION = 0.01
#: Takes with an estimated SNR below this get a warning.
NOISY_SNR_DB = 10.0
#: Shortest run of samples at the rail that counts as clipping (single peaks are normal).
MIN_CLIP_RUN = 3

_EPS = 1e-20


def _check_take(take: np.ndarray, sr: int, who: str) -> np.ndarray:
    x = np.asarray(take, dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise AnalysisError(f"{who}: take must be mono (samples,), got shape {x.shape}; mix it down first")
    if sr is None or sr <= 0:
        raise AnalysisError(f"{who}: sample rate must be positive, got sr={sr}")
    if x.size and not np.all(np.isfinite(x)):
        raise AnalysisError(f"{who}: take holds NaN or Inf samples; decode it again or replace them with 0")
    return x


def _db(power: float | np.ndarray, floor_db: float = -200.0):
    out = 10.0 * np.log10(np.maximum(power, _EPS))
    if np.ndim(out) == 0:
        return float(max(out, floor_db))
    return np.maximum(out, floor_db)


def _analysis_frame(sr: int) -> int:
    """Power-of-two frame of about 85 ms: fine enough in frequency for low voices and rumble."""
    return int(2 ** round(math.log2(0.085 * sr)))


def _frame_powers(x: np.ndarray, frame: int) -> np.ndarray:
    n = x.size // frame
    if n == 0:
        return np.zeros(0)
    blocks = x[: n * frame].reshape(n, frame)
    out = np.empty(n)
    step = max(1, (1 << 20) // frame)  # ~1 M samples at a time: no full-size float64 copy
    for i in range(0, n, step):
        chunk = blocks[i:i + step].astype(np.float64)
        out[i:i + step] = np.mean(chunk * chunk, axis=1)
    return out


# --------------------------------------------------------------------------------------------
# Hum


def detect_hum(take: np.ndarray, *, sr: int, max_hz: float = HUM_MAX_HZ) -> dict[str, Any]:
    """Detect mains hum (50 or 60 Hz and harmonics) and refine its exact frequency.

    A median-averaged Welch spectrum keeps stationary lines (hum) and discards the moving
    harmonics of the voice. Each candidate mains frequency is scored by how far its harmonics
    stand out of the spectrum around them; the exact fundamental is refined from the
    interpolated peak positions of all prominent harmonics (so 49.97 Hz is told from 50.00 Hz).

    Parameters
    ----------
    take : np.ndarray
        Mono take, float32.
    sr : int
        Sample rate in Hz.
    max_hz : float
        Highest harmonic considered.

    Returns
    -------
    dict
        ``detected`` (bool), ``fundamental_hz`` (float or None), ``nominal_hz`` (50 or 60),
        ``harmonics_hz`` (prominent harmonics, Hz), ``harmonics`` (their numbers),
        ``n_harmonics`` (highest prominent harmonic number), ``level_db`` (RMS
        of the hum lines in dBFS; -200 when none) and ``prominence_db`` per harmonic.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16000
    >>> t = np.arange(8 * sr) / sr
    >>> x = 0.01 * np.sin(2 * np.pi * 59.9 * t) + 0.001 * np.random.default_rng(1).standard_normal(t.size)
    >>> hum = detect_hum(x.astype(np.float32), sr=sr)
    >>> hum["detected"], round(hum["fundamental_hz"], 1)
    (True, 59.9)
    """
    x = _check_take(take, sr, "detect_hum")
    none: dict[str, Any] = {
        "detected": False,
        "fundamental_hz": None,
        "nominal_hz": None,
        "harmonics_hz": [],
        "harmonics": [],
        "n_harmonics": 0,
        "level_db": -200.0,
        "prominence_db": [],
    }
    # ~0.7 Hz resolution: narrow bins lift a steady line out of broadband noise (+3 dB per halving)
    # and separate it from the wandering partials of a voice.
    nperseg = int(2 ** math.ceil(math.log2(sr / 0.75)))
    if x.size < nperseg or not np.any(x):
        return none  # shorter than ~1.4 s
    # Average at most ~40 s spread over the take: hum is stationary, and this bounds the cost.
    hop = nperseg // 2
    n_seg = 1 + (x.size - nperseg) // hop
    if n_seg < 5:
        # the median over a handful of segments cannot tell a held note from hum (~4 s needed)
        return none
    max_seg = int(40 * sr / hop)
    # zero-padding to twice the length halves the bias of the parabolic peak interpolation
    n_fft = 2 * nperseg
    starts = np.arange(n_seg) * hop
    if n_seg > max_seg:
        starts = starts[np.linspace(0, n_seg - 1, max_seg).astype(int)]
    window = hann(nperseg).astype(np.float32)
    nbins_keep = int(min(max_hz + 100.0, sr / 2) * n_fft / sr) + 1
    spectra = np.empty((starts.size, nbins_keep), dtype=np.float32)
    for i, s in enumerate(starts):
        spec = sfft.rfft(x[s : s + nperseg] * window, n=n_fft)[:nbins_keep]
        spectra[i] = spec.real**2 + spec.imag**2
    psd = np.median(spectra, axis=0).astype(np.float64)
    # Median of exponential-distributed bin powers is ln 2 of the mean.
    psd /= math.log(2.0)
    # Power of a bin back to sine power: sum(w)^2 / 2 per amplitude^2 -> mean-square sine = A^2/2.
    sine_power_scale = 2.0 / float(np.sum(window)) ** 2
    bin_hz = sr / n_fft

    def harmonic_lines(f0: float) -> list[tuple[int, float, float, float]]:
        lines = []
        k_max = int(min(max_hz, sr / 2 - 20) // f0)
        for k in range(1, k_max + 1):
            centre = k * f0 / bin_hz
            # mains may sit ±0.5 % off nominal; search that far around the harmonic
            half = max(2, int(math.ceil(0.006 * k * f0 / bin_hz)))
            lo, hi = int(round(centre)) - half, int(round(centre)) + half + 1
            if lo < 2 or hi + 20 >= psd.size:
                continue
            peak = lo + int(np.argmax(psd[lo:hi]))
            # background: median of the spectrum ±(5..15) Hz around the line
            ring = np.r_[
                psd[max(1, peak - int(15 / bin_hz)) : peak - int(5 / bin_hz)],
                psd[peak + int(5 / bin_hz) + 1 : peak + int(15 / bin_hz) + 1],
            ]
            background = float(np.median(ring)) if ring.size else _EPS
            prominence = _db(psd[peak]) - _db(background)
            # parabolic interpolation of the peak on a log scale: position and height
            a, b, c = (_db(psd[peak - 1]), _db(psd[peak]), _db(psd[peak + 1]))
            denom = a - 2 * b + c
            delta = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5)) if denom < 0 else 0.0
            freq = (peak + delta) * bin_hz
            peak_power = 10.0 ** ((b - 0.25 * (a - c) * delta) / 10.0)
            line_power = max(peak_power - background, 0.0) * sine_power_scale
            lines.append((k, freq, prominence, line_power))
        return lines

    best = None
    for f0 in MAINS_HZ:
        lines = harmonic_lines(f0)
        # multiples of 300 Hz belong to both families: they do not tell 50 from 60
        telling = [ln for ln in lines if abs((ln[0] * f0) % 300.0) > 1e-6 and ln[2] >= HUM_PROMINENCE_DB]
        score = sum(ln[2] for ln in telling)
        if best is None or score > best[0]:
            best = (score, f0, lines, telling)
    assert best is not None  # MAINS_HZ is not empty
    score, f0, lines, telling = best
    prominent = [ln for ln in lines if ln[2] >= HUM_PROMINENCE_DB]
    if not telling:
        return none
    # Refine the fundamental. Start from the most prominent low line, keep only lines that agree
    # with it to a third of a bin (a held note can sit near a harmonic), then average f_k / k
    # weighted by k and prominence (a line k times higher pins the fundamental k times finer).
    anchor = max((ln for ln in prominent if ln[0] <= 4), key=lambda ln: ln[2], default=max(prominent, key=lambda ln: ln[2]))
    estimate = anchor[1] / anchor[0]
    agree = [anchor]
    for _ in range(2):
        agree = [ln for ln in prominent if abs(ln[1] - ln[0] * estimate) <= 0.35 * bin_hz]
        weights = np.array([ln[0] * min(ln[2], 40.0) for ln in agree])
        estimate = float(np.sum(weights * np.array([ln[1] / ln[0] for ln in agree])) / np.sum(weights))
    # Mains hum is a family of lines at a grid-regulated frequency (within +-0.5 %), led by its
    # low harmonics. A sung note is at most one stationary line, and never at 50/60 Hz itself.
    on_grid = abs(estimate - f0) <= MAINS_TOLERANCE * f0
    family = len(agree) >= 2 and min(ln[0] for ln in agree) <= 4
    strong_fundamental = any(ln[0] == 1 and ln[2] >= 1.5 * HUM_PROMINENCE_DB for ln in agree)
    if not on_grid or not (family or strong_fundamental):
        return none
    prominent = agree
    fundamental = estimate
    level = sum(ln[3] for ln in prominent)
    return {
        "detected": True,
        "fundamental_hz": round(fundamental, 3),
        "nominal_hz": f0,
        "harmonics_hz": [round(ln[0] * fundamental, 2) for ln in prominent],
        "harmonics": [int(ln[0]) for ln in prominent],
        "n_harmonics": int(max(ln[0] for ln in prominent)),
        "level_db": round(_db(level), 2),
        "prominence_db": [round(float(ln[2]), 1) for ln in prominent],
    }


# --------------------------------------------------------------------------------------------
# Clipping


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of runs of True."""
    if not mask.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # boolean edge tests: no full-size integer copies
    starts = np.flatnonzero(mask[1:] & ~mask[:-1]) + 1
    ends = np.flatnonzero(mask[:-1] & ~mask[1:]) + 1
    if mask[0]:
        starts = np.r_[0, starts]
    if mask[-1]:
        ends = np.r_[ends, mask.size]
    return starts, ends


def clipped_runs(take: np.ndarray, *, threshold: float, min_run: int = MIN_CLIP_RUN) -> tuple[np.ndarray, np.ndarray]:
    """Runs of at least ``min_run`` samples whose magnitude is at or above ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> starts, ends = clipped_runs(np.array([0, .5, .5, .5, 0, -.5, 0], np.float32), threshold=0.5, min_run=2)
    >>> starts.tolist(), ends.tolist()
    ([1], [4])
    """
    x = np.asarray(take)
    starts, ends = _runs(np.abs(x) >= threshold)
    keep = (ends - starts) >= min_run
    return starts[keep], ends[keep]


def detect_clipping(take: np.ndarray, *, sr: int, tolerance: float = 2e-5) -> dict[str, Any]:
    """Find samples stuck at the rails (flat tops of a clipped waveform).

    The rail is the take's peak magnitude (per polarity); samples within ``tolerance`` (relative)
    of it in runs of three or more count as clipped. Natural peaks are curved: three samples in a
    row agree to 2e-5 only on a sine below ~50 Hz, so an unclipped voice reads 0. Flat tops that a
    lossy codec has since smeared (AAC) are not found.

    Parameters
    ----------
    take : np.ndarray
        Mono take, float32.
    sr : int
        Sample rate in Hz (used for the longest run in ms).
    tolerance : float
        Relative distance from the peak that still counts as "at the rail".

    Returns
    -------
    dict
        ``fraction`` (clipped samples / all), ``threshold`` (the magnitude from which samples are
        treated as clipped), ``regions`` (number of runs), ``longest_ms`` and ``heavy`` (bool).

    Examples
    --------
    >>> import numpy as np
    >>> sr = 8000
    >>> x = np.clip(np.sin(2 * np.pi * 100 * np.arange(sr) / sr), -0.8, 0.8).astype(np.float32)
    >>> c = detect_clipping(x, sr=sr)
    >>> c["regions"], round(c["fraction"], 2)
    (200, 0.42)
    """
    x = _check_take(take, sr, "detect_clipping")
    result = {"fraction": 0.0, "threshold": 1.0, "regions": 0, "longest_ms": 0.0, "heavy": False}
    if x.size == 0:
        return result
    # Each polarity may clip at its own rail (DC offset, asymmetric preamps): use the lower one.
    pos, neg = float(np.max(x)), float(-np.min(x))
    peak = max(pos, neg)
    if peak <= 0.0:
        return result
    threshold = peak * (1.0 - tolerance)
    mask = x >= pos * (1.0 - tolerance)
    if neg > 0:
        mask |= x <= -neg * (1.0 - tolerance)
    starts, ends = _runs(mask)
    keep = (ends - starts) >= MIN_CLIP_RUN
    starts, ends = starts[keep], ends[keep]
    n_clipped = int(np.sum(ends - starts))
    fraction = n_clipped / x.size
    if starts.size:
        threshold = min(pos, neg if neg > 0 else pos) * (1.0 - tolerance)
    result.update(
        fraction=float(round(fraction, 6)),
        threshold=float(round(threshold, 6)),
        regions=int(starts.size),
        longest_ms=float(round(1000.0 * int(np.max(ends - starts, initial=0)) / sr, 3)),
        heavy=bool(fraction >= HEAVY_CLIPPING_FRACTION),
    )
    return result


# --------------------------------------------------------------------------------------------
# Noise, rumble, gate


def _band_edges(sr: int, n_bands_per_octave: int = 6, low_hz: float = 40.0) -> np.ndarray:
    nyq = sr / 2.0
    n = int(math.floor(n_bands_per_octave * math.log2(nyq / low_hz)))
    edges = low_hz * 2.0 ** (np.arange(n + 1) / n_bands_per_octave)
    return np.r_[0.0, edges[edges < nyq], nyq]


def estimate_noise(take: np.ndarray, *, sr: int, quiet_fraction: float = 0.1) -> dict[str, Any]:
    """Estimate the noise floor and spectrum from the quietest frames of the take.

    Frames (~85 ms) are ranked by power; the quietest ``quiet_fraction`` of them (ignoring
    digital silence), and every other frame within 3 dB of their level (up to half the take),
    are taken as noise alone, which holds for sung takes with breaths and pauses between
    phrases. Their mean spectrum, reduced to 1/6-octave bands by a median
    across each band's bins (so hum lines do not lift a whole band), is the noise profile.

    Parameters
    ----------
    take : np.ndarray
        Mono take, float32.
    sr : int
        Sample rate in Hz.
    quiet_fraction : float
        Share of frames assumed to hold noise only.

    Returns
    -------
    dict
        ``floor_dbfs`` (noise RMS in dBFS), ``snr_db`` (mean power of active frames over the
        floor, active = 6 dB or more above it), ``signal_dbfs``, ``band_hz`` (band centres),
        ``profile_db`` (noise PSD per band, dBFS/Hz) and ``n_frames_used``.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16000
    >>> x = 0.01 * np.random.default_rng(0).standard_normal(5 * sr).astype(np.float32)
    >>> round(estimate_noise(x, sr=sr)["floor_dbfs"])
    -40
    """
    x = _check_take(take, sr, "estimate_noise")
    frame = _analysis_frame(sr)
    edges = _band_edges(sr)
    centres = np.sqrt(np.maximum(edges[:-1], 20.0) * edges[1:])
    powers = _frame_powers(x, frame)
    empty = {
        "floor_dbfs": -200.0,
        "snr_db": 0.0,
        "signal_dbfs": -200.0,
        "band_hz": [round(float(c), 1) for c in centres],
        "profile_db": [-200.0] * centres.size,
        "n_frames_used": 0,
    }
    live = np.flatnonzero(powers > 1e-12)  # below -120 dBFS is digital silence, not room noise
    if live.size == 0:
        return empty
    n_quiet = int(np.clip(round(quiet_fraction * live.size), 1, max(1, live.size)))
    order = live[np.argsort(powers[live], kind="stable")]
    quietest_power = float(np.mean(powers[order[:n_quiet]]))
    # Real noise is not stationary (rain, dishes, traffic): the very quietest frames read low.
    # Count as noise every frame within 3 dB of them, up to half the take.
    n_noise = int(np.searchsorted(powers[order], 2.0 * quietest_power, side="right"))
    n_noise = int(np.clip(n_noise, n_quiet, max(n_quiet, live.size // 2)))
    quiet = np.sort(order[:n_noise])
    noise_power = float(np.mean(powers[quiet]))
    active = powers[live][powers[live] > 4.0 * noise_power]
    if active.size:
        signal_power = float(np.mean(active))
        snr_db = _db(max(signal_power - noise_power, _EPS) / max(noise_power, _EPS))
    else:
        signal_power, snr_db = noise_power, 0.0

    window = hann(frame).astype(np.float32)
    psd = np.zeros(frame // 2 + 1)
    for chunk in np.array_split(quiet, max(1, quiet.size // 64)):
        blocks = np.stack([x[i * frame : (i + 1) * frame] for i in chunk]) * window
        spec = np.fft.rfft(blocks, axis=1)
        psd += np.sum(spec.real.astype(np.float64) ** 2 + spec.imag**2, axis=0)
    # one-sided PSD in FS^2/Hz
    psd *= 2.0 / (quiet.size * sr * float(np.sum(window.astype(np.float64) ** 2)))
    freqs = np.fft.rfftfreq(frame, 1.0 / sr)
    profile = np.empty(centres.size)
    for b in range(centres.size):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
        profile[b] = np.median(psd[sel]) if sel.any() else psd[int(np.argmin(np.abs(freqs - centres[b])))]
    return {
        "floor_dbfs": round(_db(noise_power), 2),
        "snr_db": round(float(snr_db), 2),
        "signal_dbfs": round(_db(signal_power), 2),
        "band_hz": [round(float(c), 1) for c in centres],
        "profile_db": [round(float(v), 2) for v in _db(profile)],
        "n_frames_used": int(quiet.size),
    }


def noise_psd_at(noise: dict[str, Any], freqs_hz: np.ndarray) -> np.ndarray:
    """Noise PSD (FS^2/Hz) from an :func:`estimate_noise` profile, interpolated at ``freqs_hz``.

    Examples
    --------
    >>> import numpy as np
    >>> noise_psd_at({"band_hz": [100.0, 1000.0], "profile_db": [-60.0, -80.0]}, np.array([100.0, 1000.0])).round(10).tolist()
    [1e-06, 1e-08]
    """
    centres = np.asarray(noise["band_hz"], dtype=np.float64)
    profile_db = np.asarray(noise["profile_db"], dtype=np.float64)
    if centres.size == 0:
        return np.zeros(np.shape(freqs_hz))
    logf = np.log(np.maximum(np.asarray(freqs_hz, dtype=np.float64), 1.0))
    return 10.0 ** (np.interp(logf, np.log(centres), profile_db) / 10.0)


def estimate_rumble(take: np.ndarray, *, sr: int) -> dict[str, Any]:
    """Energy below the voice (< 60 Hz) and a high-pass corner that removes it.

    Phone mics pick up handling noise, wind and traffic below the lowest sung notes (a bass's
    E2 is 82 Hz). The corner is 70 Hz by default, 90 Hz when the low band carries a lot of
    energy (loud rumble), never above what a low voice needs.

    Returns
    -------
    dict
        ``highpass_hz`` and ``low_energy_db`` (energy below 60 Hz relative to the whole take, dB).

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16000
    >>> t = np.arange(2 * sr) / sr
    >>> estimate_rumble((0.1 * np.sin(2 * np.pi * 20 * t)).astype(np.float32), sr=sr)["highpass_hz"]
    90.0
    """
    x = _check_take(take, sr, "estimate_rumble")
    if x.size < 64 or not np.any(x):
        return {"highpass_hz": 70.0, "low_energy_db": -200.0}
    # Long-term spectrum from up to 200 frames spread over the take: cheap and plenty for a ratio.
    frame = min(_analysis_frame(sr), int(2 ** math.floor(math.log2(x.size))))
    n = x.size // frame
    picks = np.unique(np.linspace(0, n - 1, min(n, 200)).astype(int))
    window = hann(frame).astype(np.float32)
    blocks = np.stack([x[i * frame : (i + 1) * frame] for i in picks]) * window
    spec = np.fft.rfft(blocks, axis=1)
    power = np.sum(spec.real.astype(np.float64) ** 2 + spec.imag**2, axis=0)
    freqs = np.fft.rfftfreq(frame, 1.0 / sr)
    low_db = _db(float(np.sum(power[(freqs > 0) & (freqs < 60.0)])) / max(float(np.sum(power[1:])), _EPS))
    highpass = 90.0 if low_db > -15.0 else 70.0
    return {"highpass_hz": highpass, "low_energy_db": round(low_db, 2)}


def analyze_cleanup(take: np.ndarray, *, sr: int) -> dict[str, Any]:
    """Everything the clean-up chain needs to know about a take, as a JSON-serialisable dict.

    Parameters
    ----------
    take : np.ndarray
        Mono take, float32 (any rate; the engine uses 48 kHz).
    sr : int
        Sample rate in Hz.

    Returns
    -------
    dict
        ``rumble``, ``hum``, ``clipping``, ``noise`` (see the piece functions), ``gate``
        (``threshold_dbfs``: level above which the gate stays open) and ``warnings`` (strings for
        the mix report).

    Examples
    --------
    >>> import numpy as np, json
    >>> a = analyze_cleanup(np.zeros(48000, np.float32), sr=48000)
    >>> a["hum"]["detected"], a["warnings"]
    (False, ['the take is silent'])
    >>> _ = json.dumps(a)
    """
    x = _check_take(take, sr, "analyze_cleanup")
    rumble = estimate_rumble(x, sr=sr)
    hum = detect_hum(x, sr=sr)
    clipping = detect_clipping(x, sr=sr)
    noise = estimate_noise(x, sr=sr)
    warnings: list[str] = []
    if x.size == 0 or not np.any(x):
        warnings.append("the take is silent")
    else:
        if clipping["heavy"]:
            warnings.append(f"heavy clipping: {100 * clipping['fraction']:.1f} % of samples")
        if noise["n_frames_used"] and noise["snr_db"] < NOISY_SNR_DB:
            warnings.append(f"very noisy take: SNR {noise['snr_db']:.0f} dB")
        if hum["detected"] and hum["level_db"] > noise["floor_dbfs"]:
            warnings.append(f"mains hum at {hum['fundamental_hz']:.2f} Hz, {hum['level_db']:.0f} dBFS")
        if rumble["low_energy_db"] > -15.0:
            warnings.append(f"strong rumble below 60 Hz ({rumble['low_energy_db']:.0f} dB of the take)")
    # Open a few dB above the floor, but no higher than a third of the way to the voice, so soft
    # phrase ends still open it.
    snr = max(noise["snr_db"], 0.0)
    gate_threshold = noise["floor_dbfs"] + float(np.clip(snr / 3.0, 3.0, 8.0))
    return {
        "rumble": rumble,
        "hum": hum,
        "clipping": clipping,
        "noise": noise,
        "gate": {"threshold_dbfs": round(gate_threshold, 2)},
        "warnings": warnings,
    }
