"""Phone-recording degradations, each a function of the signal with known parameters.

All take ``(samples,)`` float32 (``speaker_bleed`` also takes stereo) and return float32 of the
same length, so the ground-truth timeline never moves unless :func:`apply_offset` moves it.
Levels given relative to "the signal" are power ratios over the whole array (mean square).

Examples
--------
>>> import numpy as np
>>> from tools.corpus import degrade
>>> sr = 16000
>>> y = 0.1 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr).astype(np.float32)
>>> noisy = degrade.add_noise(y, sr, snr_db=10.0, noise="pink", seed=1)
>>> round(10 * np.log10(np.mean(y ** 2) / np.mean((noisy - y) ** 2)), 1)
10.0
>>> degrade.apply_offset(np.arange(5, dtype=np.float32), sr, offset_ms=2 / sr * 1000)
array([0., 0., 0., 1., 2.], dtype=float32)
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np

from ._util import CorpusError, bandpass_noise, pink_noise, rms, rng_for, smooth_noise

NOISE_KINDS = ("pink", "white", "babble", "fan")


def _as_mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise CorpusError(f"expected (samples,) or (channels, samples), got shape {y.shape}")
    return y


def _zero_phase(board, x: np.ndarray, sr: int) -> np.ndarray:
    """Run a pedalboard chain forwards and backwards: the magnitude response is squared and
    the phase cancels, so the filter moves no part of the signal in time (the truth's offset
    stays exact under cross-correlation)."""
    y = board(np.ascontiguousarray(x, dtype=np.float32), sr)
    return np.ascontiguousarray(board(np.ascontiguousarray(y[..., ::-1]), sr)[..., ::-1], dtype=np.float32)


def band_limit(
    y: np.ndarray, sr: int, *, low_hz: float = 100.0, high_hz: float = 7000.0,
    resonance_hz: float = 2500.0, resonance_db: float = 4.0, resonance_q: float = 1.2,
) -> np.ndarray:
    """A phone microphone: 24 dB/oct high-pass at ``low_hz`` and low-pass at ``high_hz`` with a
    presence resonance of ``resonance_db``, applied zero-phase (pedalboard filters run forwards
    and backwards), so it adds no delay."""
    import pedalboard as pb

    high = min(high_hz, 0.45 * sr)
    board = pb.Pedalboard([
        pb.HighpassFilter(cutoff_frequency_hz=low_hz),
        pb.LowpassFilter(cutoff_frequency_hz=high),
        pb.PeakFilter(cutoff_frequency_hz=min(resonance_hz, 0.4 * sr), gain_db=resonance_db / 2.0, q=resonance_q),
    ])
    return _zero_phase(board, np.asarray(y, dtype=np.float32), sr)


@functools.lru_cache(maxsize=32)
def codec_delay_samples(suffix: str, sr: int, bit_rate: int | None = None, channels: int = 1) -> int:
    """Samples of encoder delay (priming) that an encode with melisma.audio_io.write_audio and a
    decode with load_audio leave for a format, measured by cross-correlating a noise burst.

    0 for every format Melisma writes: the ``.m4a`` writer signals the AAC priming (edit list and
    iTunSMPB) and the decoder honours it, mp3 carries it in its LAME header and opus in its
    pre-skip. (Before the priming was signalled, ``.m4a`` gave 1024.) Kept as a measurement, so
    that the corpus stays on its truth timeline whatever a future codec build does."""
    from scipy.signal import correlate

    if suffix.lower() in (".wav", ".flac"):
        return 0
    rng = rng_for(0, "codec-probe")
    n = sr
    probe = np.zeros((channels, n), np.float32)
    probe[:, n // 4 : n // 2] = 0.2 * rng.standard_normal(n // 2 - n // 4).astype(np.float32)
    decoded = _encode_decode(probe if channels > 1 else probe[0], sr, suffix, bit_rate)
    decoded = decoded if decoded.ndim == 1 else decoded[0]
    cc = correlate(decoded, probe[0], mode="full", method="fft")
    return int(np.argmax(cc) - (n - 1))


def aac_delay_samples(sr: int, bit_rate: int = 64000) -> int:
    """Priming delay of a mono AAC round trip (see :func:`codec_delay_samples`)."""
    return codec_delay_samples(".m4a", sr, bit_rate, 1)


def _encode_decode(y: np.ndarray, sr: int, suffix: str, bit_rate: int | None) -> np.ndarray:
    from melisma.audio_io import load_audio, write_audio

    with tempfile.TemporaryDirectory(prefix="melisma-codec-") as tmp:
        path = os.path.join(tmp, "probe" + suffix)
        write_audio(path, y, sr=sr, bit_rate=bit_rate)
        out, out_sr = load_audio(path, mono=y.ndim == 1)
    if out_sr != sr:
        from melisma.audio_io import resample

        out = resample(out, orig_sr=out_sr, target_sr=sr)
    return out


def write_aligned(path: str | os.PathLike, y: np.ndarray, sr: int, *, bit_rate: int | None = None,
                  overwrite: bool = True) -> int:
    """Write audio so that melisma.audio_io.load_audio gives it back on the SAME timeline: any
    codec delay left after decoding (:func:`codec_delay_samples`, 0 with priming signalled) is
    taken off the start before encoding (and zeros added at the end). Returns the samples removed."""
    from melisma.audio_io import write_audio

    y = np.asarray(y, dtype=np.float32)
    channels = 1 if y.ndim == 1 else y.shape[0]
    delay = codec_delay_samples(Path(path).suffix, sr, bit_rate, channels)
    if delay > 0:
        y = np.concatenate([y[..., delay:], np.zeros((*y.shape[:-1], delay), np.float32)], axis=-1)
    write_audio(path, y, sr=sr, bit_rate=bit_rate, overwrite=overwrite)
    return delay


def aac_round_trip(y: np.ndarray, sr: int, *, bit_rate: int = 64000) -> np.ndarray:
    """Encode to AAC in .m4a at ``bit_rate`` and decode back, removing the encoder's priming
    delay (:func:`codec_delay_samples`) so the timeline is unchanged. Same shape out as in."""
    y = np.asarray(y, dtype=np.float32)
    channels = 1 if y.ndim == 1 else y.shape[0]
    delay = codec_delay_samples(".m4a", sr, bit_rate, channels)
    decoded = _encode_decode(y, sr, ".m4a", bit_rate)
    n = y.shape[-1]
    out = decoded[..., delay : delay + n]
    if out.shape[-1] < n:
        out = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, n - out.shape[-1])])
    return np.ascontiguousarray(out, dtype=np.float32)


def make_noise(kind: str | os.PathLike, n: int, sr: int, *, seed: int = 0) -> np.ndarray:
    """``n`` samples of unit-RMS noise: 'pink', 'white', 'babble' (several murmuring synthetic
    talkers), 'fan' (low broadband rumble with blade tones) or a path to a noise file (read
    mono at ``sr``, a random excerpt, looped if short)."""
    rng = rng_for(seed, "noise", str(kind))
    if isinstance(kind, (str, os.PathLike)) and str(kind) not in NOISE_KINDS:
        path = Path(kind)
        if not path.is_file():
            raise CorpusError(f"noise={str(kind)!r}: not a file; give a noise recording or one of {', '.join(NOISE_KINDS)}")
        from melisma.audio_io import load_audio

        x, _ = load_audio(path, sr=sr, mono=True)
        x = x - x.mean()
        if x.size == 0 or rms(x) == 0:
            raise CorpusError(f"noise file {path} is silent")
        start = int(rng.integers(0, x.size))
        reps = int(np.ceil((n + start) / x.size)) + 1
        out = np.tile(x, reps)[start : start + n]
    elif kind == "pink":
        out = pink_noise(n, rng=rng)
    elif kind == "white":
        out = rng.standard_normal(n)
    elif kind == "babble":
        out = np.zeros(n)
        for talker in range(6):
            # a talker: voice-band noise through a moving formant, gated at syllable rate (~4 Hz)
            lo, hi = 300.0 + 50 * talker, min(3400.0, 0.45 * sr)
            src = bandpass_noise(n, sr=sr, low_hz=lo, high_hz=hi, rng=rng, order=2)
            gate = np.clip(smooth_noise(n, rate_hz=4.0, sr=sr, rng=rng) + 0.3, 0.0, None)
            out += src * gate
    elif kind == "fan":
        t = np.arange(n) / sr
        low = bandpass_noise(n, sr=sr, low_hz=40.0, high_hz=1500.0, rng=rng, order=2)
        blade = 110.0 * (1 + 0.002 * smooth_noise(n, rate_hz=0.5, sr=sr, rng=rng))
        phase = 2 * np.pi * np.cumsum(blade) / sr
        tones = 0.5 * np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.12 * np.sin(3 * phase)
        out = low + tones + 0.1 * pink_noise(n, rng=rng) + 0 * t
    else:
        raise CorpusError(f"noise={kind!r}: use one of {', '.join(NOISE_KINDS)} or a path to a noise file")
    out = np.asarray(out, dtype=np.float64)
    return (out / (rms(out) + 1e-20)).astype(np.float32)


def add_noise(
    y: np.ndarray, sr: int, *, snr_db: float, noise: str | os.PathLike = "pink", seed: int = 0,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Add noise so that power(reference) / power(noise) = ``snr_db`` (reference defaults to ``y``)."""
    y = np.asarray(y, dtype=np.float32)
    ref = y if reference is None else np.asarray(reference)
    level = rms(ref)
    if level == 0:
        raise CorpusError("add_noise: the reference signal is silent, so an SNR has no meaning")
    n = make_noise(noise, y.size, sr, seed=seed)
    return (y + n * np.float32(level * 10 ** (-snr_db / 20.0))).astype(np.float32)


def add_hum(
    y: np.ndarray, sr: int, *, hum_hz: float = 50.0, hum_db: float = -30.0,
    harmonics: tuple[float, ...] = (1.0, 0.5, 0.35, 0.2, 0.12), seed: int = 0, reference: np.ndarray | None = None,
) -> np.ndarray:
    """Mains hum: ``hum_hz`` and harmonics (relative amplitudes ``harmonics``), total RMS
    ``hum_db`` relative to the reference's (default ``y``) RMS. Odd harmonics, slight buzz."""
    if hum_hz not in (50, 60, 50.0, 60.0) and not 40.0 <= hum_hz <= 70.0:
        raise CorpusError(f"hum_hz={hum_hz}: mains hum is 50 or 60 Hz")
    y = np.asarray(y, dtype=np.float32)
    ref = y if reference is None else np.asarray(reference)
    rng = rng_for(seed, "hum")
    t = np.arange(y.size) / sr
    hum = np.zeros(y.size)
    for k, g in enumerate(harmonics, start=1):
        if k * hum_hz < 0.45 * sr:
            hum += g * np.sin(2 * np.pi * k * hum_hz * t + rng.uniform(0, 2 * np.pi))
    level = rms(ref) * 10 ** (hum_db / 20.0)
    return (y + hum * (level / (rms(hum) + 1e-20))).astype(np.float32)


def synthetic_rir(sr: int, *, rt60_s: float = 0.4, direct_to_reverb_db: float = 6.0, seed: int = 0) -> np.ndarray:
    """An exponentially decaying noise tail after a unit direct impulse at index 0, with early
    reflections in the first 20 ms and high frequencies decaying faster."""
    from scipy.signal import butter, sosfilt

    rng = rng_for(seed, "rir")
    n = int(max(rt60_s, 0.05) * 1.2 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)  # -60 dB at rt60
    dark = sosfilt(butter(1, min(4000.0, 0.4 * sr) / (sr / 2), output="sos"), tail) * np.exp(-6.91 * t / rt60_s)
    tail = 0.5 * tail * np.exp(-3 * t / rt60_s) + dark
    tail[: int(0.003 * sr)] = 0.0  # a gap before the first reflection
    for _ in range(6):
        i = int(rng.uniform(0.003, 0.02) * sr)
        tail[i] += rng.uniform(-0.6, 0.6)
    rir = tail / (np.sqrt(np.sum(tail**2)) + 1e-20) * 10 ** (-direct_to_reverb_db / 20.0)
    rir[0] = 1.0
    return rir.astype(np.float32)


def load_rir(path: str | os.PathLike, sr: int) -> np.ndarray:
    """A measured RIR (channel 0), resampled, trimmed to start at its direct sound, scaled to 1 there."""
    from melisma.audio_io import load_audio

    x, _ = load_audio(path, sr=sr)
    x = x[0].astype(np.float64)
    # the direct sound: the first arrival within 6 dB of the strongest, at its local peak
    first = int(np.flatnonzero(np.abs(x) >= 0.5 * np.max(np.abs(x)))[0])
    peak = first + int(np.argmax(np.abs(x[first : first + max(1, int(0.001 * sr))])))
    x = x[peak:]
    return (x / x[0]).astype(np.float32)


def add_reverb(
    y: np.ndarray, sr: int, *, rir: str | os.PathLike | np.ndarray = "synthetic", rt60_s: float = 0.4, seed: int = 0,
) -> np.ndarray:
    """Convolve with a room impulse response whose direct sound is at index 0 (so the timeline
    does not move): 'synthetic' (:func:`synthetic_rir`), a file path (:func:`load_rir`) or an array.
    The output has the input's RMS."""
    from scipy.signal import oaconvolve

    y = np.asarray(y, dtype=np.float32)
    if isinstance(rir, np.ndarray):
        h = rir
    elif str(rir) == "synthetic":
        h = synthetic_rir(sr, rt60_s=rt60_s, seed=seed)
    else:
        if not Path(rir).is_file():
            raise CorpusError(f"rir={str(rir)!r}: not a file; give an impulse response file, 'synthetic' or None")
        h = load_rir(rir, sr)
    out = oaconvolve(y.astype(np.float64), h.astype(np.float64))[: y.size]
    return (out * (rms(y) / (rms(out) + 1e-20))).astype(np.float32)


def clip(y: np.ndarray, *, fraction: float) -> tuple[np.ndarray, float]:
    """Drive ``y`` so that ``fraction`` of its samples exceed full scale, then hard-clip at +-1.

    Returns the clipped signal and the drive in dB that was applied.
    """
    y = np.asarray(y, dtype=np.float32)
    if not 0.0 <= fraction < 0.5:
        raise CorpusError(f"clip fraction={fraction}: use 0 <= fraction < 0.5 (e.g. 0.01 for 1 % of samples)")
    if fraction == 0.0:
        return y.copy(), 0.0
    mag = np.sort(np.abs(y))
    k = int(np.floor(fraction * y.size))
    threshold = float(mag[y.size - k - 1]) if k < y.size else float(mag[0])
    threshold = max(threshold, 1e-9)
    drive = 1.0 / threshold  # exactly k samples lie strictly above the threshold (ties aside)
    return np.clip(y * np.float32(drive), -1.0, 1.0).astype(np.float32), float(20 * np.log10(drive))


def apply_offset(y: np.ndarray, sr: int, *, offset_ms: float) -> np.ndarray:
    """Shift later by ``offset_ms`` (rounded to whole samples; negative = earlier), keeping the
    length: zeros enter at the start (or the end when negative)."""
    y = np.asarray(y, dtype=np.float32)
    shift = offset_samples(offset_ms, sr)
    out = np.zeros_like(y)
    n = y.shape[-1]
    if shift >= 0:
        if shift < n:
            out[..., shift:] = y[..., : n - shift]
    elif -shift < n:
        out[..., : n + shift] = y[..., -shift:]
    return out


def offset_samples(offset_ms: float, sr: int) -> int:
    return int(round(offset_ms * sr / 1000.0))


def phone_speaker(backing: np.ndarray, sr: int, *, seed: int = 0) -> np.ndarray:
    """The backing as a phone's small loudspeaker plays it: mono, no bass below ~500 Hz, rolled
    off above ~8 kHz, a boxy resonance and a little soft saturation (zero-phase: no delay)."""
    import pedalboard as pb

    x = _as_mono(backing)
    board = pb.Pedalboard([  # applied twice (zero-phase): orders and gains are halves
        pb.HighpassFilter(cutoff_frequency_hz=450.0),
        pb.LowpassFilter(cutoff_frequency_hz=min(8000.0, 0.45 * sr)),
        pb.PeakFilter(cutoff_frequency_hz=min(1200.0, 0.4 * sr), gain_db=3.0, q=1.5),
        pb.PeakFilter(cutoff_frequency_hz=min(3500.0, 0.4 * sr), gain_db=1.5, q=2.0),
    ])
    out = _zero_phase(board, x, sr).astype(np.float64)
    peak = np.max(np.abs(out)) + 1e-20
    out = np.tanh(1.5 * out / peak) * peak / 1.5
    return out.astype(np.float32)


def speaker_bleed(
    backing: np.ndarray, sr: int, *, bleed_db: float, reference: np.ndarray, seed: int = 0,
) -> np.ndarray:
    """The phone-speaker backing (:func:`phone_speaker`) scaled so its RMS is ``bleed_db``
    relative to ``reference``'s (the voice). Same timeline as the backing."""
    spk = phone_speaker(backing, sr, seed=seed)
    level = rms(reference) * 10 ** (bleed_db / 20.0)
    return (spk * (level / (rms(spk) + 1e-20))).astype(np.float32)
