"""Keys (major/minor and Chinese pentatonic modes), chord progressions and a singable melody generator.

Examples
--------
>>> from tools.corpus.melody import Key, generate_melody
>>> key = Key.parse("D shang")
>>> key.pitch_classes()
[2, 4, 7, 9, 0]
>>> melody = generate_melody(key, tempo_bpm=96, duration_s=8.0, seed=2)
>>> all(round(n.midi) % 12 in key.pitch_classes() for n in melody.notes)
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._util import CorpusError, rng_for
from .voice import VOICES, VOWELS, NoteSpec

#: Scale steps (semitones above the tonic) per mode. Chinese modes are the pentatonic scale
#: started on its gong, shang, jue, zhi or yu degree: "D shang" has D as tonic and C as gong.
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "gong": (0, 2, 4, 7, 9),
    "shang": (0, 2, 5, 7, 10),
    "jue": (0, 3, 5, 8, 10),
    "zhi": (0, 2, 5, 7, 9),
    "yu": (0, 3, 5, 7, 10),
}
#: Semitones from a Chinese mode's tonic down to its gong note.
_GONG_BELOW = {"gong": 0, "shang": 2, "jue": 4, "zhi": 7, "yu": 9}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_NAME_TO_PC = {n.lower(): i for i, n in enumerate(PITCH_NAMES)} | {
    "db": 1, "d#": 3, "gb": 6, "g#": 8, "a#": 10, "cb": 11, "e#": 5, "fb": 4, "b#": 0}


@dataclass(frozen=True)
class Key:
    """A tonic pitch class (0 = C) and a mode from :data:`MODES`."""

    tonic: int
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CorpusError(f"mode={self.mode!r}: use one of {', '.join(MODES)}")
        if not 0 <= int(self.tonic) < 12:
            raise CorpusError(f"tonic={self.tonic}: use a pitch class 0-11 (0 = C)")

    @classmethod
    def parse(cls, text: str | Key) -> Key:
        """``"A minor"``, ``"Eb major"``, ``"D shang"``, ``"G zhi"``."""
        if isinstance(text, Key):
            return text
        parts = str(text).replace("_", " ").split()
        if len(parts) != 2 or parts[0].lower() not in _NAME_TO_PC:
            raise CorpusError(f"key={text!r}: write a tonic and a mode, e.g. 'A minor', 'Eb major', 'D shang'")
        return cls(_NAME_TO_PC[parts[0].lower()], parts[1].lower())

    @property
    def name(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    def pitch_classes(self) -> list[int]:
        return [(self.tonic + s) % 12 for s in MODES[self.mode]]

    def scale_midi(self, low: int, high: int) -> list[int]:
        pcs = set(self.pitch_classes())
        return [m for m in range(low, high + 1) if m % 12 in pcs]

    def as_dict(self) -> dict[str, Any]:
        return {"tonic": PITCH_NAMES[self.tonic], "tonic_pc": self.tonic, "mode": self.mode, "name": self.name,
                "pitch_classes": self.pitch_classes()}


def chord_progression(key: Key, n_bars: int, *, seed: int = 0) -> list[list[int]]:
    """One chord per bar as pitch classes (root first), starting and ending on the tonic chord.

    Major/minor use their diatonic triads; a pentatonic mode uses the triads of its gong's major
    scale around the mode's tonic chord (yu: vi-IV-V-vi, i.e. Am-F-G-Am for A yu).
    """
    rng = rng_for(seed, "chords")
    if key.mode in ("major", "minor"):
        scale = MODES[key.mode]
        loops = {"major": [(0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3)],
                 "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 5, 6, 4)]}[key.mode]
        base_pc, degrees_of = key.tonic, scale
        tonic_degree = 0
    else:
        base_pc = (key.tonic - _GONG_BELOW[key.mode]) % 12
        degrees_of = MODES["major"]
        tonic_degree = {"gong": 0, "shang": 1, "jue": 2, "zhi": 4, "yu": 5}[key.mode]
        loops = {"gong": [(0, 5, 3, 4), (0, 3, 4, 0)], "shang": [(1, 4, 0, 1), (1, 5, 4, 1)],
                 "jue": [(2, 5, 3, 2), (2, 3, 4, 2)], "zhi": [(4, 0, 3, 4), (4, 1, 0, 4)],
                 "yu": [(5, 3, 4, 5), (5, 1, 4, 5)]}[key.mode]
    loop = loops[int(rng.integers(len(loops)))]
    chords = []
    for bar in range(n_bars):
        degree = tonic_degree if bar == n_bars - 1 else loop[bar % len(loop)]
        pcs = [(base_pc + degrees_of[(degree + 2 * j) % 7] + 12 * ((degree + 2 * j) // 7)) % 12 for j in range(3)]
        chords.append(pcs)
    return chords


@dataclass
class Melody:
    """A vocal line: notes with ornaments, the key, tempo and the chords under it."""

    notes: list[NoteSpec]
    key: Key
    tempo_bpm: float
    chords: list[list[int]]
    beats_per_bar: int = 4
    voice: str = "female"
    phrases: list[tuple[float, float]] = field(default_factory=list)

    @property
    def bar_s(self) -> float:
        return self.beats_per_bar * 60.0 / self.tempo_bpm


_CELLS = (  # one 4/4 bar of note lengths in eighth notes
    (2, 2, 2, 2), (1, 1, 2, 2, 2), (3, 1, 2, 2), (2, 1, 1, 4), (4, 2, 2), (2, 2, 4),
    (6, 2), (1, 1, 1, 1, 4), (8,), (3, 3, 2),
)


def generate_melody(
    key: Key | str,
    *,
    tempo_bpm: float = 90.0,
    duration_s: float = 10.0,
    seed: int = 0,
    voice: str = "female",
    ornaments: bool = True,
    ornament_rate: float = 1.0,
    detune_cents_max: float = 40.0,
    lead_in_s: float | None = None,
) -> Melody:
    """A singable line in ``key``: 2-bar phrases of stepwise motion with a few leaps, chord tones
    on strong beats, phrase ends on a stable degree, breaths in the rests between phrases.

    With ``ornaments`` it draws vibrato on long notes, scoops (slide_in), falls (slide_out) at
    phrase ends, portamento between legato notes, grace notes, an occasional trill or mordent,
    drift, per-note detune up to ``detune_cents_max`` and the natural rising start.
    ``ornament_rate`` scales how often (0 = none, 2 = twice as often).
    """
    key = Key.parse(key)
    preset = VOICES.get(voice)
    if preset is None:
        raise CorpusError(f"voice={voice!r}: use one of {', '.join(VOICES)}")
    if not 40 <= tempo_bpm <= 220:
        raise CorpusError(f"tempo_bpm={tempo_bpm}: use 40-220")
    rng = rng_for(seed, "melody")
    beat = 60.0 / tempo_bpm
    eighth = beat / 2.0
    bar = 4 * beat
    n_bars = max(1, int(np.ceil(duration_s / bar)))
    chords = chord_progression(key, n_bars, seed=seed)
    lo, hi = preset.midi_low, preset.midi_high
    scale = key.scale_midi(lo, hi)
    tonic_centre = min((m for m in scale if m % 12 == key.tonic), key=lambda m: abs(m - (lo + hi) / 2))
    idx = scale.index(tonic_centre)
    lead_in = bar if lead_in_s is None else lead_in_s  # one bar of backing before the first phrase
    notes: list[NoteSpec] = []
    phrases = []
    start = lead_in
    rate = max(0.0, ornament_rate) if ornaments else 0.0
    while True:
        cells = int(rng.choice([1, 2, 2, 3]))
        rhythm: list[int] = []
        for _ in range(cells):
            rhythm.extend(_CELLS[int(rng.integers(len(_CELLS)))])
        while rhythm and start + sum(rhythm) * eighth > duration_s - 0.3:
            rhythm.pop()  # shorten the phrase to fit the take
        if not rhythm:  # a short take: fill what is left with quarter notes
            rhythm = [2] * min(4, int((duration_s - 0.3 - start) / (2 * eighth)))
        if not rhythm:
            break
        t = start
        phrase_notes = []
        for j, eighths in enumerate(rhythm):
            bar_index = min(n_bars - 1, int(t // bar))
            chord = chords[bar_index]
            on_strong = abs((t / beat) - round(t / beat)) < 1e-6
            last = j == len(rhythm) - 1
            # step or leap, prefer chord tones on strong beats and a stable degree at the phrase end
            candidates = list(range(max(0, idx - 4), min(len(scale), idx + 5)))
            weights = []
            for c in candidates:
                step = abs(c - idx)
                w = {0: 0.5, 1: 3.0, 2: 1.5, 3: 0.5, 4: 0.25}[step]
                if (on_strong or last) and scale[c] % 12 in chord:
                    w *= 3.0
                if last and scale[c] % 12 in (key.tonic, (key.tonic + 7) % 12):
                    w *= 4.0
                w *= np.exp(-0.5 * ((scale[c] - (lo + hi) / 2) / 5.0) ** 2) + 0.05  # stay mid-range
                weights.append(w)
            weights = np.asarray(weights) / np.sum(weights)
            idx = candidates[int(rng.choice(len(weights), p=weights))]
            dur = eighths * eighth
            gap = 0.0 if (last or rng.random() < 0.6) else min(0.12, 0.25 * dur)  # legato or a short break
            phrase_notes.append(NoteSpec(midi=float(scale[idx]), start_s=t, duration_s=dur - gap,
                                         vowel=VOWELS[int(rng.integers(len(VOWELS)))],
                                         velocity=float(rng.uniform(0.65, 0.9))))
            t += dur
        phrases.append((phrase_notes[0].start_s, phrase_notes[-1].end_s))
        if rate > 0:
            _ornament_phrase(phrase_notes, rng, rate, detune_cents_max)
        notes.extend(phrase_notes)
        start = t + int(rng.choice([2, 3, 4])) * eighth  # a rest to breathe
    return Melody(notes=notes, key=key, tempo_bpm=float(tempo_bpm), chords=chords, voice=preset.name, phrases=phrases)


def _ornament_phrase(notes: list[NoteSpec], rng: np.random.Generator, rate: float, detune_max: float) -> None:
    def chance(p: float) -> bool:
        return bool(rng.random() < min(1.0, p * rate))

    if chance(0.5):
        notes[0].consonant = ["s", "sh", "h", "t", "k"][int(rng.integers(5))]
    for i, n in enumerate(notes):
        n.detune_cents = float(rng.uniform(-detune_max, detune_max)) if chance(0.6) else 0.0
        onset = None
        if n.duration_s >= 0.3 and chance(0.25):
            onset = "slide_in"
            n.ornaments.append({"type": "slide_in", "duration_ms": float(rng.uniform(80, 200)),
                                "interval_cents": float(-rng.uniform(100, 300)), "shape": "sigmoid" if chance(0.7) else "linear"})
        elif n.duration_s >= 0.25 and chance(0.15):
            onset = "grace"
            sign = 1.0 if rng.random() < 0.7 else -1.0
            n.ornaments.append({"type": "grace", "duration_ms": float(rng.uniform(40, 130)),
                                "interval_cents": float(sign * rng.choice([100.0, 200.0, 300.0]))})
        elif chance(0.4):
            n.onset_rise_cents = float(rng.uniform(15, 50))
            n.onset_rise_ms = float(rng.uniform(50, 110))
        if n.duration_s >= 0.45 and chance(0.8):
            vib_dur = n.duration_s - 0.15
            n.ornaments.append({"type": "vibrato", "rate_hz": float(rng.uniform(5.5, 7.5)),
                                "extent_cents": float(rng.uniform(60, 180)),
                                "onset_ms": float(rng.uniform(80, min(300, 0.4 * vib_dur * 1000))),
                                "fade_in_ms": float(rng.uniform(100, 250))})
        elif n.duration_s >= 0.3 and onset is None and chance(0.08):
            n.ornaments.append({"type": "trill", "rate_hz": float(rng.uniform(5.5, 7.5)),
                                "interval_cents": float(rng.choice([100.0, 200.0]))})
        elif n.duration_s >= 0.2 and onset is None and chance(0.08):
            n.ornaments.append({"type": "mordent", "rate_hz": float(rng.uniform(7, 10)),
                                "interval_cents": float(rng.choice([-200.0, -100.0, 100.0, 200.0]))})
        elif n.duration_s >= 0.3 and chance(0.2):
            n.ornaments.append({"type": "drift", "drift_cents": float(rng.uniform(-40, 40))})
        if i == len(notes) - 1 and n.duration_s >= 0.3 and chance(0.35):
            n.ornaments.append({"type": "slide_out", "duration_ms": float(rng.uniform(120, 250)),
                                "interval_cents": float(-rng.uniform(150, 400)), "shape": "sigmoid"})
    # portamento only into a note with no onset ornament of its own (they would fight over its start)
    for n, nxt in itertools.pairwise(notes):
        onset_kinds = {o["type"] for o in nxt.ornaments} & {"slide_in", "grace", "mordent", "trill"}
        if abs(nxt.start_s - n.end_s) < 1e-6 and not onset_kinds and chance(0.3):
            longest = 1000.0 * min(n.duration_s, nxt.duration_s)  # half the glide lies in each note
            n.ornaments.append({"type": "portamento", "duration_ms": float(rng.uniform(60, min(220, longest))),
                                "shape": "sigmoid" if chance(0.7) else "linear"})
            nxt.onset_rise_cents = 0.0


def melody_to_midi(melody: Melody, *, program: int = 53, ticks_per_beat: int = 480) -> Any:
    """The intended melody (target pitches, sung timing) as a one-track :class:`mido.MidiFile`.

    Pitches are the targets (``NoteSpec.midi``), not the detuned sung centres: this is the
    reference a singer was meant to follow (``--melody``). Program 53 is GM "Voice Oohs".
    """
    import mido

    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("track_name", name="melody", time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(melody.tempo_bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=melody.beats_per_bar, denominator=4, time=0))
    track.append(mido.Message("program_change", program=program, channel=0, time=0))
    events = []
    for n in melody.notes:
        events.append((n.start_s, 1, int(round(n.midi)), int(np.clip(n.velocity * 127, 1, 127))))
        events.append((n.end_s, 0, int(round(n.midi)), 0))
    _append_events(track, events, melody.tempo_bpm, ticks_per_beat, channel=0)
    return mid


def _append_events(track: Any, events: list[tuple[float, int, int, int]], tempo_bpm: float, tpb: int, channel: int) -> None:
    """Append (time_s, is_on, note, velocity) events as delta-timed note messages."""
    import mido

    events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same time
    now = 0
    for time_s, is_on, note, vel in events:
        tick = int(round(time_s * tempo_bpm / 60.0 * tpb))
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, note=note, velocity=vel, channel=channel, time=max(0, tick - now)))
        now = max(now, tick)
