"""Keys and scales: parsing, snapping, and estimating the key of audio or of sung notes.

Modes: ``major``, ``minor`` (natural minor) and the five Chinese pentatonic modes on any tonic:
``gong`` 宫 (1 2 3 5 6), ``shang`` 商 (2 3 5 6 1), ``jue`` 角 (3 5 6 1 2), ``zhi`` 徵 (5 6 1 2 3),
``yu`` 羽 (6 1 2 3 5). ``D zhi`` is the zhi mode whose tonic is D (pitch classes D E G A B).

Key estimation correlates a pitch-class profile (a chroma vector of the audio, or the
duration-weighted pitch classes of sung notes) with key profiles (Albrecht & Shanahan 2013 for
major/minor; pentatonic profiles built the same way: tonic and fifth strongest, other scale tones
next, the rest low), as Krumhansl-Schmuckler do. Confidence is a softmax over the correlations:
near 1 when one key fits much better than the rest, near 1/number-of-keys when all fit alike.

Examples
--------
>>> s = parse_key("D zhi")
>>> s.name, s.pitch_classes
('D zhi', (2, 4, 7, 9, 11))
>>> s.nearest_midi(63.4)
64
>>> parse_key("Am").name
'A minor'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import AnalysisError, ConfigError
from ..filter_design import hann

__all__ = ["MODES", "KeyEstimate", "Scale", "chroma", "estimate_key", "estimate_key_from_notes", "parse_key"]

#: Intervals above the tonic of every mode.
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "gong": (0, 2, 4, 7, 9),
    "shang": (0, 2, 5, 7, 10),
    "jue": (0, 3, 5, 8, 10),
    "zhi": (0, 2, 5, 7, 9),
    "yu": (0, 3, 5, 7, 10),
}
PENTATONIC_MODES = ("gong", "shang", "jue", "zhi", "yu")

_PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MODE_ALIASES = {
    "": "major", "maj": "major", "major": "major", "ionian": "major", "大调": "major",
    "m": "minor", "min": "minor", "minor": "minor", "aeolian": "minor", "小调": "minor",
    "gong": "gong", "宫": "gong", "宫调": "gong",
    "shang": "shang", "商": "shang", "商调": "shang",
    "jue": "jue", "角": "jue", "角调": "jue",
    "zhi": "zhi", "徵": "zhi", "徵调": "zhi",
    "yu": "yu", "羽": "yu", "羽调": "yu",
}
_VALID_EXAMPLES = "'C', 'Am', 'A minor', 'F# major', 'Bb', 'D zhi', 'Eb gong', 'A yu', 'G 徵'"

# Albrecht & Shanahan (2013) key profiles (major, minor), tonic first.
_PROFILE_MAJOR = np.array([0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081])
_PROFILE_MINOR = np.array([0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052])


def _pentatonic_profile(intervals: Sequence[int]) -> np.ndarray:
    p = np.full(12, 0.01)
    for iv in intervals:
        p[iv] = 0.12
    p[0] = 0.26
    if 7 in intervals:
        p[7] = 0.2
    return p / p.sum()


_PROFILES = {"major": _PROFILE_MAJOR, "minor": _PROFILE_MINOR}
_PROFILES.update({m: _pentatonic_profile(MODES[m]) for m in PENTATONIC_MODES})


@dataclass(frozen=True)
class Scale:
    """A tonic and a mode; ``pitch_classes`` are the scale's pitch classes (tonic first)."""

    tonic_pc: int
    mode: str
    pitch_classes: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} unknown; use one of {', '.join(MODES)}")
        if not 0 <= int(self.tonic_pc) <= 11:
            raise ConfigError(f"tonic_pc={self.tonic_pc} must be a pitch class 0..11 (C=0)")
        object.__setattr__(self, "tonic_pc", int(self.tonic_pc))
        object.__setattr__(self, "pitch_classes", tuple((self.tonic_pc + i) % 12 for i in MODES[self.mode]))

    @property
    def name(self) -> str:
        return f"{_PC_NAMES[self.tonic_pc]} {self.mode}"

    def __str__(self) -> str:
        return self.name

    def nearest_midi(self, midi: float) -> int:
        """Nearest MIDI note in the scale (ties go down).

        >>> parse_key("C major").nearest_midi(61.0), parse_key("C gong").nearest_midi(65.4)
        (60, 64)
        """
        if not np.isfinite(midi):
            raise AnalysisError(f"cannot snap a non-finite pitch {midi!r} to {self.name}")
        base = int(np.floor(midi))
        best, best_d = None, np.inf
        for cand in range(base - 3, base + 5):
            if cand % 12 in self.pitch_classes:
                d = abs(cand - midi)
                if d < best_d - 1e-9:
                    best, best_d = cand, d
        assert best is not None  # every octave holds a pitch class of the key
        return int(best)

    def to_dict(self) -> dict:
        return {"name": self.name, "tonic_pc": self.tonic_pc, "mode": self.mode, "pitch_classes": list(self.pitch_classes)}

    @classmethod
    def from_dict(cls, d: dict) -> Scale:
        try:
            return cls(tonic_pc=int(d["tonic_pc"]), mode=str(d["mode"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a scale dict ({exc!r}); expected tonic_pc and mode") from None


@dataclass
class KeyEstimate:
    """The most likely key, how sure (0..1), and the runner-up keys as ``[(name, score), ...]``."""

    scale: Scale
    confidence: float
    candidates: list[tuple[str, float]]
    source: str = "audio"

    def to_dict(self) -> dict:
        return {
            "key": self.scale.name,
            "scale": self.scale.to_dict(),
            "confidence": round(float(self.confidence), 3),
            "candidates": [{"key": k, "score": round(float(s), 3)} for k, s in self.candidates],
            "source": self.source,
        }


def parse_key(text: str) -> Scale:
    """Parse a key or mode name: ``'C'``, ``'Am'``, ``'A minor'``, ``'F# major'``, ``'D zhi'``, ``'Eb gong'``, ``'G徵'``.

    Raises
    ------
    ConfigError
        With valid examples, when the text is not a key.

    >>> parse_key("eb gong").pitch_classes
    (3, 5, 7, 10, 0)
    """
    if isinstance(text, Scale):
        return text
    raw = str(text)
    t = raw.strip().replace("♯", "#").replace("♭", "b")
    m = re.fullmatch(r"([A-Ga-g])\s*(#|b|sharp|flat|-sharp|-flat)?\s*[-_ ]?\s*(.*)", t)
    if not m:
        raise ConfigError(f"key {raw!r} not understood; use a tonic A-G with #/b and a mode, e.g. {_VALID_EXAMPLES}")
    letter, acc, mode_text = m.group(1).upper(), (m.group(2) or "").lstrip("-"), m.group(3).strip()
    pc = _LETTER_PC[letter] + {"": 0, "#": 1, "sharp": 1, "b": -1, "flat": -1}[acc]
    # 'm' alone means minor; everything else is case-insensitive
    key = mode_text if mode_text == "m" else mode_text.lower()
    key = key.removesuffix(" mode").removesuffix(" key").strip()
    if key not in _MODE_ALIASES:
        raise ConfigError(
            f"key {raw!r}: mode {mode_text!r} unknown; use major/minor or a pentatonic mode "
            f"(gong, shang, jue, zhi, yu), e.g. {_VALID_EXAMPLES}"
        )
    return Scale(pc % 12, _MODE_ALIASES[key])


# --------------------------------------------------------------------------------------------
# estimation


def chroma(y: np.ndarray, *, sr: int, fmin_hz: float = 55.0, fmax_hz: float = 2000.0, n_fft: int = 4096) -> np.ndarray:
    """Mean pitch-class profile (12 values, C first, sums to 1) of audio.

    An STFT at 11025 Hz (n_fft 4096: 2.7 Hz bins, enough to tell semitones apart from 55 Hz up),
    log-compressed magnitudes mapped to the nearest semitone, each frame normalised so loud frames
    do not dominate.
    """
    import scipy.fft

    from ..audio_io import resample

    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    target = 11025
    if sr != target:
        y = resample(y, orig_sr=sr, target_sr=target)
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    # The STFT of scipy.signal.stft (Hann, 50 % overlap, no padding), taken a block of frames at a
    # time and keeping only the bins used below: the whole complex spectrogram is never held.
    f = scipy.fft.rfftfreq(n_fft, 1.0 / target)
    band = (f >= fmin_hz) & (f <= fmax_hz)
    midi = 69.0 + 12.0 * np.log2(f[band] / 440.0)
    # keep bins near a semitone centre only (between-semitone leakage blurs the profile)
    near = np.abs(midi - np.round(midi)) < 0.35
    band_bins = np.flatnonzero(band)
    pcs = np.round(midi[near]).astype(int) % 12
    window = hann(n_fft).astype(np.float32)
    window /= window.sum()
    frames_view = np.lib.stride_tricks.sliding_window_view(y, n_fft)[:: n_fft // 2]
    mag = np.empty((int(near.sum()), frames_view.shape[0]), np.float32)
    loudest = 0.0  # over the whole band, not only the bins kept
    block = 64
    for a in range(0, frames_view.shape[0], block):
        spectrum = np.abs(scipy.fft.rfft(frames_view[a : a + block] * window, axis=1)[:, band_bins])
        loudest = max(loudest, float(spectrum.max()))
        mag[:, a : a + block] = spectrum[:, near].T
    mag = np.log1p(100.0 * mag / (loudest + 1e-12))
    frames = np.zeros((12, mag.shape[1]), dtype=np.float64)
    np.add.at(frames, pcs, mag)
    # remove each frame's floor (noise, drums) so the profile shows what stands out
    frames = np.maximum(frames - frames.min(axis=0, keepdims=True), 0)
    norm = frames.sum(axis=0, keepdims=True)
    prof = (frames / np.maximum(norm, 1e-12)).sum(axis=1)
    total = prof.sum()
    if total <= 0:
        raise AnalysisError("no pitched content found for key estimation (silent or unpitched audio)")
    return prof / total


def _score_keys(profile: np.ndarray, modes: Iterable[str]) -> list[tuple[Scale, float]]:
    p = np.asarray(profile, dtype=np.float64)
    p = p - p.mean()
    out = []
    for mode in modes:
        if mode not in _PROFILES:
            raise ConfigError(f"mode {mode!r} unknown; use one of {', '.join(MODES)}")
        ref = _PROFILES[mode] - _PROFILES[mode].mean()
        for tonic in range(12):
            r = np.roll(ref, tonic)
            corr = float(np.dot(p, r) / (np.linalg.norm(p) * np.linalg.norm(r) + 1e-12))
            out.append((Scale(tonic, mode), corr))
    out.sort(key=lambda x: -x[1])
    return out


def _estimate(profile: np.ndarray, modes: Sequence[str], source: str, temperature: float = 0.05) -> KeyEstimate:
    scored = _score_keys(profile, modes)
    corr = np.array([c for _, c in scored])
    w = np.exp((corr - corr.max()) / temperature)
    probs = w / w.sum()
    # keys with the same pitch classes (C major / A minor) are hard to tell apart; the confidence
    # is that of the best key itself, the candidates show the close ones
    return KeyEstimate(
        scale=scored[0][0],
        confidence=float(probs[0]),
        candidates=[(s.name, float(c)) for s, c in scored[:5]],
        source=source,
    )


def estimate_key(y: np.ndarray, *, sr: int, modes: Sequence[str] = ("major", "minor")) -> KeyEstimate:
    """Key of audio (a backing track, or a vocal) from its chroma.

    Parameters
    ----------
    y : np.ndarray
        Audio, mono or ``(channels, samples)``.
    sr : int
    modes : sequence of str
        Modes to consider; add ``PENTATONIC_MODES`` for Chinese pentatonic music.

    Returns
    -------
    KeyEstimate

    Examples
    --------
    >>> sr = 11025
    >>> t = np.arange(2 * sr) / sr
    >>> chord = sum(np.sin(2 * np.pi * 440 * 2 ** (k / 12) * t) for k in (-9, -5, -2, 0, 3))  # C E G A C
    >>> estimate_key(chord.astype(np.float32), sr=sr).scale.name in ("C major", "A minor")
    True
    """
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    return _estimate(chroma(y, sr=sr), modes, "audio")


def estimate_key_from_notes(notes: Sequence, *, modes: Sequence[str] = ("major", "minor")) -> KeyEstimate:
    """Key of sung notes: their duration-weighted pitch-class histogram against the key profiles.

    ``notes`` are :class:`~melisma.analysis.notes.Note` or anything with ``start_s``, ``end_s``, ``midi``.

    >>> from melisma.analysis.notes import Note
    >>> mel = [Note(i * 0.5, i * 0.5 + 0.4, m) for i, m in enumerate([60, 62, 64, 65, 67, 65, 64, 62, 60, 67, 60])]
    >>> estimate_key_from_notes(mel).scale.name
    'C major'
    """
    hist = _note_histogram(notes)
    if hist.sum() <= 0:
        raise AnalysisError("no notes to estimate a key from; give a key with --key or a reference melody")
    return _estimate(hist / hist.sum(), modes, "notes")


def _note_histogram(notes: Sequence) -> np.ndarray:
    hist = np.zeros(12)
    for n in notes:
        if n.midi is None or not np.isfinite(n.midi):
            continue
        hist[int(round(n.midi)) % 12] += max(n.end_s - n.start_s, 0.0)
    return hist


def estimate_key_combined(
    y: np.ndarray, *, sr: int, notes: Sequence, modes: Sequence[str] = ("major", "minor"), notes_weight: float = 1.0
) -> KeyEstimate:
    """Key from a backing's chroma and the sung notes together.

    The backing's harmony and the melody each leave keys that share most pitch classes nearly
    tied (A minor vs E minor differ by one note); summing the two normalised profiles lets the
    melody break the tie. Falls back to the backing alone when there are no notes.

    >>> from melisma.analysis.notes import Note
    >>> sr = 11025
    >>> t = np.arange(2 * sr) / sr
    >>> chord = sum(np.sin(2 * np.pi * 440 * 2 ** (k / 12) * t) for k in (-9, -5, -2, 0, 3))
    >>> mel = [Note(i * 0.5, i * 0.5 + 0.4, m) for i, m in enumerate([69, 71, 72, 74, 76, 77, 76, 72, 69])]
    >>> estimate_key_combined(chord.astype(np.float32), sr=sr, notes=mel).scale.name
    'A minor'
    """
    if sr <= 0:
        raise AnalysisError(f"sample rate must be positive, got sr={sr}")
    profile = chroma(y, sr=sr)
    profile = profile / (profile.sum() + 1e-12)
    hist = _note_histogram(notes)
    if hist.sum() > 0:
        profile = profile + notes_weight * hist / hist.sum()
    return _estimate(profile, modes, "backing+notes")


def estimate_tuning_cents(
    y: np.ndarray, *, sr: int, fmin_hz: float = 80.0, fmax_hz: float = 2000.0, n_fft: int = 8192, max_frames: int = 400
) -> float:
    """Where a recording's pitches sit relative to A440 equal temperament, in cents (−50…50).

    A band tuned to A = 430 Hz sits at about −40 cents; correcting its singer to the 440 grid
    would pull them off the band. The estimate is the magnitude-weighted circular mean of the
    deviation of the spectral peaks (parabolic interpolation on a long STFT) from the nearest
    semitone. Returns NaN when the signal has no peaks (silence).

    >>> sr = 16000
    >>> t = np.arange(2 * sr) / sr
    >>> tone = sum(np.sin(2 * np.pi * f * 2 ** (-0.3 / 12) * t) for f in (220.0, 277.18, 329.63))
    >>> round(estimate_tuning_cents(tone.astype(np.float32), sr=sr))
    -30
    """
    x = np.asarray(y, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.size < n_fft:
        return float("nan")
    hop = n_fft // 4
    starts = np.arange(0, x.size - n_fft + 1, hop)
    if starts.size > max_frames:
        starts = starts[np.linspace(0, starts.size - 1, max_frames).astype(int)]
    window = np.hanning(n_fft).astype(np.float32)
    lo = max(2, int(fmin_hz * n_fft / sr))
    hi = min(n_fft // 2 - 2, int(fmax_hz * n_fft / sr) + 1)
    angles, weights = [], []
    for s in starts:
        mag = np.abs(np.fft.rfft(x[s : s + n_fft] * window))
        top = mag.max()
        if top <= 0:
            continue
        band = mag[lo - 1 : hi + 1]
        mid = band[1:-1]
        peaks = np.nonzero((mid > band[:-2]) & (mid >= band[2:]) & (mid > 0.05 * top))[0] + lo
        if peaks.size == 0:
            continue
        a, b, c = (np.log(mag[peaks + d] + 1e-12) for d in (-1, 0, 1))
        denom = a - 2 * b + c
        delta = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
        freq = (peaks + delta) * sr / n_fft
        angles.append(2 * np.pi * 12 * np.log2(freq / 440.0))
        weights.append(mag[peaks])
    if not weights:
        return float("nan")
    w = np.concatenate(weights)
    ang = np.concatenate(angles)
    mean = np.angle(np.sum(w * np.exp(1j * ang)))
    return float(mean / (2 * np.pi) * 100.0)
