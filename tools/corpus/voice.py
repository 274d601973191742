"""A synthetic singing voice whose f0 is known exactly.

Alias-free additive synthesis: every harmonic ``k`` follows the same f0 curve (phase is the
running sum of ``2*pi*k*f0/sr``) and is left out above a cut-off below Nyquist. Harmonic
amplitudes come from a glottal spectral tilt times a vowel's formant resonances plus a singer's
formant; small jitter and shimmer, pitch-synchronous aspiration noise, per-note envelopes,
consonant onsets (sibilant "s"/"sh" noise bursts for de-esser tests) and breaths between phrases
make it voice-like. The f0 written to the truth is the very curve the oscillators followed.

Notes are :class:`NoteSpec`; ornaments are plain dicts ``{"type": ..., **params}``:

==============  ================================================================================
type            parameters (defaults in :data:`ORNAMENT_DEFAULTS`)
==============  ================================================================================
vibrato         rate_hz (5.5-8), extent_cents (PEAK-TO-PEAK, 60-200), onset_ms (delay from the
                note start), fade_in_ms, rate_jitter, extent_jitter (slow relative wander)
slide_in        duration_ms, interval_cents (start pitch minus centre; < 0 scoops up from below),
                shape ('sigmoid' | 'linear')
slide_out       duration_ms, interval_cents (end pitch minus centre; < 0 falls off), shape
portamento      duration_ms, shape; glides to the NEXT note, which must start where this ends.
                Centred on the boundary; interval_cents is filled in (next centre - this centre)
grace           duration_ms (30-150), interval_cents (+-100-300): a short note at the start of
                the note's span, then a quick move to the main pitch
trill           rate_hz (cycles/s), interval_cents, start_ms, duration_ms (default: to the end)
mordent         rate_hz, interval_cents, start_ms: one main-upper-main cycle lasting 1/rate_hz
drift           drift_cents: slow linear centre wander from -drift/2 to +drift/2 over the note
==============  ================================================================================

Per note also ``detune_cents`` (sung centre minus target) and the natural rising start
``onset_rise_cents``/``onset_rise_ms`` (the pitch starts that far below and rises into the note).

Examples
--------
>>> from tools.corpus.voice import NoteSpec, synthesize_voice
>>> take = synthesize_voice([NoteSpec(midi=69, start_s=0.1, duration_s=0.8,
...                                   ornaments=[{"type": "vibrato", "rate_hz": 6.0, "extent_cents": 100.0}])],
...                        sr=16000, seed=1)
>>> take.audio.dtype, take.sr, [o["type"] for o in take.ornaments]
(dtype('float32'), 16000, ['vibrato'])
>>> f0 = take.f0_hz[(take.times_s > 0.5) & (take.times_s < 0.9)]  # +-50 cents around A4 (+ jitter)
>>> 420 < f0.min() < 430 and 450 < f0.max() < 460
True
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._util import CorpusError, bandpass_noise, midi_to_hz, rms, rng_for, shape_curve, smooth_noise

#: Hop of the f0 truth, in seconds.
F0_HOP_S = 0.005

ORNAMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "vibrato": {"rate_hz": 6.0, "extent_cents": 100.0, "onset_ms": 150.0, "fade_in_ms": 200.0,
                "rate_jitter": 0.03, "extent_jitter": 0.05},
    "slide_in": {"duration_ms": 150.0, "interval_cents": -200.0, "shape": "sigmoid"},
    "slide_out": {"duration_ms": 200.0, "interval_cents": -300.0, "shape": "sigmoid"},
    "portamento": {"duration_ms": 150.0, "shape": "sigmoid"},
    "grace": {"duration_ms": 80.0, "interval_cents": 200.0},
    "trill": {"rate_hz": 6.0, "interval_cents": 200.0, "start_ms": 0.0, "duration_ms": None},
    "mordent": {"rate_hz": 8.0, "interval_cents": 200.0, "start_ms": 0.0},
    "drift": {"drift_cents": 30.0},
}
ORNAMENT_TYPES = tuple(ORNAMENT_DEFAULTS)

#: Formants F1-F3 (Hz) per vowel (Peterson & Barney 1952 averages for men, women, children).
_FORMANTS = {
    "male": {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
             "o": (570, 840, 2410), "u": (300, 870, 2240)},
    "female": {"a": (850, 1220, 2810), "e": (610, 2330, 2990), "i": (310, 2790, 3310),
               "o": (590, 920, 2710), "u": (370, 950, 2670)},
    "child": {"a": (1030, 1370, 3170), "e": (690, 2610, 3570), "i": (370, 3200, 3730),
              "o": (680, 1060, 3180), "u": (430, 1170, 3260)},
}
VOWELS = ("a", "e", "i", "o", "u")

#: Consonant noise bands (Hz), durations (ms) and levels (dB re the vowel RMS).
CONSONANTS = {
    "s": {"band_hz": (4000.0, 9000.0), "duration_ms": 120.0, "level_db": -4.0},
    "sh": {"band_hz": (2200.0, 7000.0), "duration_ms": 130.0, "level_db": -5.0},
    "h": {"band_hz": (500.0, 5000.0), "duration_ms": 80.0, "level_db": -16.0},
    "t": {"band_hz": (3000.0, 8000.0), "duration_ms": 18.0, "level_db": -6.0},
    "k": {"band_hz": (1500.0, 4500.0), "duration_ms": 25.0, "level_db": -8.0},
}


@dataclass(frozen=True)
class VoicePreset:
    """A voice type: formant table, comfortable MIDI range and timbre settings."""

    name: str
    formants: str
    midi_low: int
    midi_high: int
    formant_scale: float = 1.0
    tilt: float = 1.0  # harmonic amplitude ~ k**-tilt (glottal source -12 dB/oct + lip radiation +6)
    singer_formant_hz: float = 3000.0
    singer_formant_gain: float = 0.3
    aspiration_db: float = -30.0  # breath noise re the harmonic RMS
    jitter_cents: float = 3.0
    shimmer_db: float = 0.6


VOICES: dict[str, VoicePreset] = {
    "male": VoicePreset("male", "male", 48, 67, tilt=1.0, singer_formant_hz=2900.0, singer_formant_gain=0.35,
                        aspiration_db=-32.0),
    "female": VoicePreset("female", "female", 57, 79, tilt=1.1, singer_formant_hz=3150.0, singer_formant_gain=0.2,
                          aspiration_db=-28.0),
    "child": VoicePreset("child", "child", 60, 81, tilt=1.2, singer_formant_hz=3400.0, singer_formant_gain=0.1,
                         aspiration_db=-26.0),
}


@dataclass
class NoteSpec:
    """One sung note.

    ``midi`` is the intended (target) pitch; the sung centre is ``midi + detune_cents / 100``.
    The note sounds from ``start_s`` for ``duration_s`` (a grace or slide_in lies inside that span).
    """

    midi: float
    start_s: float
    duration_s: float
    detune_cents: float = 0.0
    vowel: str = "a"
    velocity: float = 0.8
    consonant: str | None = None
    onset_rise_cents: float = 0.0
    onset_rise_ms: float = 80.0
    ornaments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def centre_midi(self) -> float:
        return float(self.midi) + self.detune_cents / 100.0


@dataclass
class VoiceTake:
    """Synthesised singing and its exact ground truth.

    ``f0_hz[j]`` is the f0 at ``j * hop_s`` (0 where unvoiced); ``notes``, ``ornaments``,
    ``consonants`` and ``breaths`` are JSON-ready dicts with times in seconds.
    """

    audio: np.ndarray
    sr: int
    f0_hz: np.ndarray
    hop_s: float
    notes: list[dict[str, Any]]
    ornaments: list[dict[str, Any]]
    consonants: list[dict[str, Any]]
    breaths: list[dict[str, Any]]
    voice: str

    @property
    def times_s(self) -> np.ndarray:
        return np.arange(self.f0_hz.size) * self.hop_s

    def truth(self) -> dict[str, Any]:
        return {"voice": self.voice, "hop_s": self.hop_s, "notes": self.notes, "ornaments": self.ornaments,
                "consonants": self.consonants, "breaths": self.breaths}


def _resolve_ornament(orn: dict[str, Any], note_index: int) -> dict[str, Any]:
    if "type" not in orn:
        raise CorpusError(f"note {note_index}: ornament {orn!r} has no 'type'; use one of {', '.join(ORNAMENT_TYPES)}")
    kind = orn["type"]
    if kind not in ORNAMENT_DEFAULTS:
        raise CorpusError(f"note {note_index}: ornament type {kind!r} unknown; use one of {', '.join(ORNAMENT_TYPES)}")
    params = dict(ORNAMENT_DEFAULTS[kind])
    unknown = set(orn) - set(params) - {"type"}
    if unknown:
        raise CorpusError(f"note {note_index}: {kind} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update({k: v for k, v in orn.items() if k != "type"})
    if "shape" in params and params["shape"] not in ("sigmoid", "linear"):
        raise CorpusError(f"note {note_index}: {kind} shape={params['shape']!r}; use 'sigmoid' or 'linear'")
    for key in ("rate_hz", "duration_ms"):
        if key in params and params[key] is not None and float(params[key]) <= 0:
            raise CorpusError(f"note {note_index}: {kind} {key}={params[key]} must be positive")
    return params


def _note_deviation(
    t: np.ndarray, note: NoteSpec, ornaments: list[tuple[str, dict[str, Any]]], rng: np.random.Generator, sr: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Pitch deviation from the note centre in cents at times ``t`` (may extend past the note),
    and the ornament truth records for this note (without the note index)."""
    dev = np.zeros_like(t)
    start, end = note.start_s, note.end_s
    records: list[dict[str, Any]] = []
    has_onset_ornament = False
    for kind, p in ornaments:
        if kind == "vibrato":
            t0 = start + p["onset_ms"] / 1000.0
            fade = max(p["fade_in_ms"], 1.0) / 1000.0
            rate = p["rate_hz"] * (1.0 + p["rate_jitter"] * smooth_noise(t.size, rate_hz=1.0, sr=sr, rng=rng))
            phase = np.cumsum(2.0 * np.pi * rate / sr)
            phase -= np.interp(t0, t, phase)  # sine starts at zero when the vibrato starts
            extent = p["extent_cents"] * (1.0 + p["extent_jitter"] * smooth_noise(t.size, rate_hz=1.0, sr=sr, rng=rng))
            ramp = shape_curve((t - t0) / fade, "sigmoid") * (t >= t0)
            dev += 0.5 * extent * ramp * np.sin(phase)
            records.append({"type": kind, "start_s": t0, "end_s": end, "params": p})
        elif kind == "slide_in":
            d = p["duration_ms"] / 1000.0
            dev += p["interval_cents"] * (1.0 - shape_curve((t - start) / d, p["shape"]))
            records.append({"type": kind, "start_s": start, "end_s": start + d, "params": p})
            has_onset_ornament = True
        elif kind == "slide_out":
            d = p["duration_ms"] / 1000.0
            dev += p["interval_cents"] * shape_curve((t - (end - d)) / d, p["shape"])
            records.append({"type": kind, "start_s": end - d, "end_s": end, "params": p})
        elif kind == "grace":
            d = p["duration_ms"] / 1000.0
            move = min(0.025, 0.5 * d)  # quick move from the grace to the main pitch
            dev += p["interval_cents"] * (1.0 - shape_curve((t - (start + d - move / 2)) / move, "sigmoid"))
            records.append({"type": kind, "start_s": start, "end_s": start + d, "params": p})
            has_onset_ornament = True
        elif kind in ("trill", "mordent"):
            t0 = start + p["start_ms"] / 1000.0
            if kind == "trill":
                t1 = end if p["duration_ms"] is None else min(end, t0 + p["duration_ms"] / 1000.0)
            else:
                t1 = t0 + 1.0 / p["rate_hz"]
            inside = (t >= t0) & (t < t1)
            square = np.tanh(-3.0 * np.cos(2.0 * np.pi * p["rate_hz"] * (t - t0))) / np.tanh(3.0)
            dev += p["interval_cents"] * (0.5 + 0.5 * square) * inside
            records.append({"type": kind, "start_s": t0, "end_s": t1, "params": p})
        elif kind == "drift":
            u = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0)
            dev += p["drift_cents"] * (u - 0.5)
            records.append({"type": kind, "start_s": start, "end_s": end, "params": p})
        # portamento is blended between two notes by the caller
    if note.onset_rise_cents and not has_onset_ornament:
        d = max(note.onset_rise_ms, 1.0) / 1000.0
        u = np.clip((t - start) / d, 0.0, 1.0)
        dev -= note.onset_rise_cents * (1.0 - u) ** 2  # fast rise that settles into the note
    return dev, records


def _draw(value: float | tuple[float, float], rng: np.random.Generator) -> float:
    """A fixed value, or a uniform draw from a (low, high) range."""
    if isinstance(value, tuple):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


def _envelope_ramp(n: int, sr: int, ms: float, floor: float) -> np.ndarray:
    k = min(n, max(1, int(round(ms * sr / 1000.0))))
    ramp = np.ones(n)
    ramp[:k] = floor + (1.0 - floor) * 0.5 * (1.0 - np.cos(np.pi * np.arange(k) / k))
    return ramp


def synthesize_voice(
    notes: list[NoteSpec],
    *,
    sr: int = 48000,
    duration_s: float | None = None,
    voice: str | VoicePreset = "female",
    seed: int = 0,
    breaths: bool = True,
    hop_s: float = F0_HOP_S,
    max_harmonic_hz: float = 12000.0,
    peak: float = 0.5,
    release_ms: float | tuple[float, float] = 70.0,
    release_breath_db: float | tuple[float, float] = 0.0,
    legato_dip: float | tuple[float, float] = 0.55,
) -> VoiceTake:
    """Sing ``notes`` with a synthetic voice and return the audio with its exact truth.

    Parameters
    ----------
    notes : list of NoteSpec
        Sorted by start time, not overlapping (a note may start exactly where the previous ends:
        legato; portamento needs that).
    sr : int
        Sample rate (any; harmonics stay below ``min(max_harmonic_hz, 0.45 * sr)``).
    duration_s : float, optional
        Length of the output; default: last note end + 0.3 s.
    voice : 'female' | 'male' | 'child' or VoicePreset
    seed : int
        Everything random (jitter, shimmer, noise, phases) follows from it.
    breaths : bool
        Put an inhale in rests of 0.35 s or more before a phrase.
    hop_s : float
        Hop of the f0 truth.
    peak : float
        Peak level of the output.
    release_ms : float or (low, high)
        Length of the fade at the end of a phrase (a raised cosine to silence); a pair draws one
        length per phrase end, uniformly.
    release_breath_db : float or (low, high)
        How much breathier the voice gets by the end of a phrase's release (aspiration gain in dB,
        rising through the release, as the glottis opens); a pair draws one per phrase end.
    legato_dip : float or (low, high)
        Envelope floor (linear) of the dip between legato syllables; a pair draws one per dip.

    Returns
    -------
    VoiceTake

    Examples
    --------
    >>> take = synthesize_voice([NoteSpec(60, 0.0, 0.4), NoteSpec(62, 0.4, 0.4, consonant=None)],
    ...                         sr=22050, voice="male", seed=3)
    >>> len(take.notes), take.audio.shape[0] == int(round(1.1 * 22050))
    (2, True)
    """
    preset = VOICES.get(voice) if isinstance(voice, str) else voice
    if preset is None:
        raise CorpusError(f"voice={voice!r}: use one of {', '.join(VOICES)} or a VoicePreset")
    if sr < 8000:
        raise CorpusError(f"sr={sr}: use a sample rate of at least 8000 Hz")
    for name, value, low, high in (("release_ms", release_ms, 1.0, 2000.0), ("release_breath_db", release_breath_db, 0.0, 60.0),
                                   ("legato_dip", legato_dip, 0.0, 1.0)):
        values = value if isinstance(value, tuple) else (value,)
        if len(values) not in (1, 2) or not all(low <= float(v) <= high for v in values):
            raise CorpusError(f"{name}={value!r}: use a number or a (low, high) pair within {low:g}..{high:g}")
    notes = [copy.deepcopy(n) for n in sorted(notes, key=lambda n: n.start_s)]
    for i, n in enumerate(notes):
        if n.duration_s <= 0.02:
            raise CorpusError(f"note {i}: duration_s={n.duration_s} is too short; use at least 0.03 s")
        if n.start_s < 0:
            raise CorpusError(f"note {i}: start_s={n.start_s} is negative")
        if n.vowel not in VOWELS:
            raise CorpusError(f"note {i}: vowel={n.vowel!r}; use one of {', '.join(VOWELS)}")
        if n.consonant is not None and n.consonant not in CONSONANTS:
            raise CorpusError(f"note {i}: consonant={n.consonant!r}; use one of {', '.join(CONSONANTS)} or None")
        if i and n.start_s < notes[i - 1].end_s - 1e-9:
            raise CorpusError(f"note {i} starts at {n.start_s:.3f} s before note {i - 1} ends ({notes[i - 1].end_s:.3f} s)")
    if duration_s is None:
        duration_s = (notes[-1].end_s if notes else 0.0) + 0.3
    n_samples = int(round(duration_s * sr))
    t_all = np.arange(n_samples) / sr

    midi_curve = np.zeros(n_samples)
    voiced = np.zeros(n_samples, dtype=bool)
    env = np.zeros(n_samples)
    note_of_sample = np.full(n_samples, -1, dtype=np.int64)
    resolved = [[(o["type"], _resolve_ornament(o, i)) for o in n.ornaments] for i, n in enumerate(notes)]
    ornament_truth: list[dict[str, Any]] = []
    porta_from: dict[int, dict[str, Any]] = {}
    for i, orns in enumerate(resolved):
        for kind, p in orns:
            if kind == "portamento":
                if i + 1 >= len(notes) or abs(notes[i + 1].start_s - notes[i].end_s) > 1e-6:
                    raise CorpusError(
                        f"note {i}: portamento needs a next note starting where this one ends ({notes[i].end_s:.3f} s); "
                        "make the notes legato or use slide_out"
                    )
                p["interval_cents"] = 100.0 * (notes[i + 1].centre_midi - notes[i].centre_midi)
                porta_from[i] = p

    legato_prev = [i > 0 and abs(n.start_s - notes[i - 1].end_s) < 1e-6 for i, n in enumerate(notes)]
    note_curves: list[tuple[int, np.ndarray]] = []
    dips: dict[int, float] = {}  # legato dip floor between note i and i + 1
    breath_gain = np.ones(n_samples)  # aspiration rising through phrase-end releases
    for i, n in enumerate(notes):
        pad_before = porta_from[i - 1]["duration_ms"] / 2000.0 if (i - 1) in porta_from else 0.0
        pad_after = porta_from[i]["duration_ms"] / 2000.0 if i in porta_from else 0.0
        a = max(0, int(round((n.start_s - pad_before) * sr)))
        b = min(n_samples, int(round((n.end_s + pad_after) * sr)))
        t = t_all[a:b]
        dev, records = _note_deviation(t, n, resolved[i], rng_for(seed, "note", i), sr)
        for r in records:
            ornament_truth.append({"type": r["type"], "note": i, "start_s": r["start_s"], "end_s": r["end_s"], "params": r["params"]})
        note_curves.append((a, n.centre_midi + dev / 100.0))
        s0, s1 = int(round(n.start_s * sr)), min(n_samples, int(round(n.end_s * sr)))
        midi_curve[s0:s1] = note_curves[-1][1][s0 - a : s1 - a]
        voiced[s0:s1] = True
        note_of_sample[s0:s1] = i
        # envelope: full attack/release at phrase edges, a shallow dip between legato syllables
        legato_next = i + 1 < len(notes) and legato_prev[i + 1]
        attack_ms = 40.0
        shape_rng = rng_for(seed, "envelope", i)  # drawn only where a range was given
        rel_ms = _draw(release_ms, shape_rng)
        floor_in = 0.0 if not legato_prev[i] else (1.0 if (i - 1) in porta_from else dips[i - 1])
        if legato_next:
            dips[i] = _draw(legato_dip, shape_rng)
        floor_out = 0.0 if not legato_next else (1.0 if i in porta_from else dips[i])
        m = s1 - s0
        e = n.velocity * _envelope_ramp(m, sr, attack_ms if floor_in == 0 else 30.0, floor_in)
        e *= _envelope_ramp(m, sr, rel_ms if floor_out == 0 else 30.0, floor_out)[::-1]
        env[s0:s1] = e
        if floor_out == 0:
            k = min(m, max(1, int(round(rel_ms * sr / 1000.0))))
            breath_gain[s1 - k : s1] = 10.0 ** (_draw(release_breath_db, shape_rng) / 20.0 * np.linspace(0, 1, k))

    # portamento: cross-fade the two notes' pitch curves over a window centred on the boundary
    for i, p in porta_from.items():
        d = p["duration_ms"] / 1000.0
        boundary = notes[i].end_s
        w0, w1 = max(0, int(round((boundary - d / 2) * sr))), min(n_samples, int(round((boundary + d / 2) * sr)))
        a_i, c_i = note_curves[i]
        a_j, c_j = note_curves[i + 1]
        s = shape_curve((t_all[w0:w1] - (boundary - d / 2)) / d, p["shape"])
        midi_curve[w0:w1] = (1.0 - s) * c_i[w0 - a_i : w1 - a_i] + s * c_j[w0 - a_j : w1 - a_j]
        ornament_truth.append(
            {
                "type": "portamento",
                "note": i,
                "start_s": boundary - d / 2,
                "end_s": boundary + d / 2,
                "params": {**p, "to_note": i + 1},
            }
        )

    rng = rng_for(seed, "voice")
    # jitter: slow (< ~20 Hz) f0 wobble, part of the truth curve
    if preset.jitter_cents > 0:
        midi_curve += voiced * (preset.jitter_cents / 100.0) * smooth_noise(n_samples, rate_hz=20.0, sr=sr, rng=rng)
    f0 = np.where(voiced, midi_to_hz(midi_curve), 0.0)

    # smooth tiny amplitude steps between notes of different velocity, then shimmer
    k = max(1, int(0.005 * sr))
    env = np.convolve(env, np.hanning(k + 2)[1:-1] / np.hanning(k + 2)[1:-1].sum(), mode="same") * voiced
    env *= 10.0 ** (preset.shimmer_db / 20.0 * smooth_noise(n_samples, rate_hz=25.0, sr=sr, rng=rng))

    harmonic, phase = _harmonics(f0, voiced, note_of_sample, notes, preset, sr, max_harmonic_hz, rng)
    audio = harmonic * env

    vowel_rms = rms(audio[voiced]) if voiced.any() else 1e-3
    # aspiration: band-passed noise pulsing with the glottal cycle
    asp = bandpass_noise(n_samples, sr=sr, low_hz=1200.0, high_hz=7000.0, rng=rng, order=2)
    asp *= (0.6 + 0.4 * np.cos(phase)) * env / max(env.max(), 1e-9)
    asp_rms = max(rms(asp[voiced]) if voiced.any() else 1.0, 1e-9)  # before the release boost, so it stays local
    if np.any(breath_gain != 1.0):
        asp *= breath_gain
    audio += asp * vowel_rms * 10.0 ** (preset.aspiration_db / 20.0) / asp_rms

    consonant_truth = []
    for i, n in enumerate(notes):
        if n.consonant is None:
            continue
        c = CONSONANTS[n.consonant]
        d = c["duration_ms"] / 1000.0
        c0, c1 = max(0, int(round((n.start_s - d) * sr))), int(round(n.start_s * sr))
        if c1 <= c0:
            continue
        burst = bandpass_noise(c1 - c0, sr=sr, low_hz=c["band_hz"][0], high_hz=c["band_hz"][1], rng=rng_for(seed, "cons", i))
        shape = np.minimum(1.0, np.minimum(np.arange(c1 - c0), np.arange(c1 - c0)[::-1]) / max(1, 0.02 * sr * min(1.0, d / 0.06)))
        audio[c0:c1] += burst * shape * vowel_rms * n.velocity / 0.8 * 10.0 ** (c["level_db"] / 20.0)
        consonant_truth.append(
            {"type": n.consonant, "note": i, "start_s": c0 / sr, "end_s": c1 / sr, "band_hz": list(c["band_hz"])}
        )

    breath_truth = []
    if breaths:
        for i, n in enumerate(notes):
            prev_end = notes[i - 1].end_s if i else 0.0
            onset = n.start_s - (CONSONANTS[n.consonant]["duration_ms"] / 1000.0 if n.consonant else 0.0)
            gap = onset - prev_end
            if gap < 0.35:
                continue
            d = min(0.45, gap - 0.15)
            b1 = onset - 0.06
            b0 = b1 - d
            i0, i1 = int(round(b0 * sr)), int(round(b1 * sr))
            noise = bandpass_noise(i1 - i0, sr=sr, low_hz=400.0, high_hz=4000.0, rng=rng_for(seed, "breath", i), order=2)
            u = np.linspace(0.0, 1.0, i1 - i0)
            shape = np.sin(np.pi * u) ** 2 * (0.5 + 0.5 * u)
            audio[i0:i1] += noise * shape * vowel_rms * 10.0 ** (-24.0 / 20.0)
            breath_truth.append({"start_s": i0 / sr, "end_s": i1 / sr})

    audio *= peak / max(float(np.max(np.abs(audio))), 1e-9)

    n_frames = int(np.floor(duration_s / hop_s)) + 1
    idx = np.minimum(np.round(np.arange(n_frames) * hop_s * sr).astype(np.int64), n_samples - 1)
    f0_truth = np.where(voiced[idx], f0[idx], 0.0).astype(np.float64)

    note_truth = []
    for i, n in enumerate(notes):
        note_truth.append(
            {
                "index": i,
                "start_s": n.start_s,
                "end_s": n.end_s,
                "midi": n.centre_midi,
                "target_midi": float(n.midi),
                "detune_cents": float(n.detune_cents),
                "vowel": n.vowel,
                "consonant": n.consonant,
                "velocity": float(n.velocity),
                "onset_rise_cents": float(n.onset_rise_cents),
                "onset_rise_ms": float(n.onset_rise_ms),
                "legato_from_previous": bool(legato_prev[i]),
            }
        )
    ornament_truth.sort(key=lambda r: (r["start_s"], r["note"]))
    return VoiceTake(
        audio=audio.astype(np.float32),
        sr=sr,
        f0_hz=f0_truth,
        hop_s=hop_s,
        notes=note_truth,
        ornaments=ornament_truth,
        consonants=consonant_truth,
        breaths=breath_truth,
        voice=preset.name,
    )


def _spectral_envelope(freqs: np.ndarray, formants: np.ndarray, preset: VoicePreset) -> np.ndarray:
    """Linear amplitude of the vocal tract at ``freqs`` (J, K) for per-frame formants (J, 3)."""
    gains = (1.0, 0.5, 0.28)
    out = np.full(freqs.shape, 0.01)
    f = np.maximum(freqs, 1.0)
    extra = [(3600.0 * preset.formant_scale, 0.15), (4500.0 * preset.formant_scale, 0.08)]
    for i in range(3):
        F = formants[:, i : i + 1]
        B = 50.0 + 0.06 * F
        out += gains[i] / np.sqrt(1.0 + ((f * f - F * F) / (f * B)) ** 2)
    for F, g in [*extra, (preset.singer_formant_hz, preset.singer_formant_gain)]:
        B = 50.0 + 0.1 * F
        out += g / np.sqrt(1.0 + ((f * f - F * F) / (f * B)) ** 2)
    return out


def _harmonics(
    f0: np.ndarray,
    voiced: np.ndarray,
    note_of_sample: np.ndarray,
    notes: list[NoteSpec],
    preset: VoicePreset,
    sr: int,
    max_harmonic_hz: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of harmonics following ``f0`` (zero where unvoiced) and the fundamental's phase."""
    n = f0.size
    out = np.zeros(n)
    phase = np.cumsum(2.0 * np.pi * f0 / sr) + rng.uniform(0, 2 * np.pi)
    if not voiced.any():
        return out, phase
    cutoff = min(max_harmonic_hz, 0.45 * sr)
    hop = max(16, int(round(sr / 750.0)))  # control rate for harmonic amplitudes (~1.3 ms)
    table = _FORMANTS[preset.formants]
    # per-sample formant targets by the note's vowel, smoothed for coarticulation (60 ms)
    vowel_f = np.array([table[n.vowel] for n in notes], dtype=np.float64) * preset.formant_scale
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [n]])
    for a, b in itertools.pairwise(bounds):
        if not voiced[a]:
            continue
        seg_f0 = f0[a:b]
        frames = int(np.ceil((b - a) / hop))
        pad = frames * hop - (b - a)
        ctrl_idx = np.minimum(np.arange(frames + 1) * hop, b - a - 1)
        ctrl_f0 = seg_f0[ctrl_idx]
        forms = vowel_f[note_of_sample[a:b][ctrl_idx]]
        k_smooth = max(1, int(round(0.06 * sr / hop)))
        if k_smooth > 1 and frames > 1:
            kernel = np.ones(k_smooth) / k_smooth
            padded = np.pad(forms, ((k_smooth // 2, k_smooth - 1 - k_smooth // 2), (0, 0)), mode="edge")
            forms = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(3)], axis=1)
        n_harm = int(cutoff / max(seg_f0.min(), 30.0))
        k = np.arange(1, n_harm + 1, dtype=np.float64)
        freqs = ctrl_f0[:, None] * k[None, :]
        amps = _spectral_envelope(freqs, forms, preset) * k[None, :] ** -preset.tilt
        # fade harmonics out just below the cut-off so none ever reaches Nyquist
        amps *= np.clip((cutoff - freqs) / (0.1 * cutoff), 0.0, 1.0)
        start = amps[:-1].T  # (K, frames)
        slope = (amps[1:] - amps[:-1]).T
        ramp = np.arange(hop) / hop
        ph = phase[a:b] - phase[a]
        ph = np.pad(ph, (0, pad)).reshape(frames, hop)
        s_prev = np.zeros_like(ph)
        s_cur = np.sin(ph)
        c2 = 2.0 * np.cos(ph)
        acc = np.zeros_like(ph)
        for h in range(n_harm):
            if not start[h].any() and not slope[h].any():
                break
            acc += (start[h][:, None] + slope[h][:, None] * ramp[None, :]) * s_cur
            s_prev, s_cur = s_cur, c2 * s_cur - s_prev
        out[a:b] = acc.reshape(-1)[: b - a]
    return out, phase
