"""The pitch picture's geometry, from a plan: sung and corrected curves, notes, targets, ornaments.

Pure arithmetic on the plan record (no Kivy), so it can be checked on its own; the result screen
(:class:`melisma_companion.app.ui.PitchView`) draws exactly these shapes with Kivy's graphics.

The corrected curve is the sung curve with each note's centre moved toward its target by the
plan's correction strength (0.8 unless the plan says otherwise) and the ornament residual kept,
which is what the box's ornament-aware correction does; frames outside notes are unchanged.

Examples
--------
>>> plan = {"pitch": {"f0": {"hop_s": 0.5, "hz": [0, 440, 440, 0]},
...                   "notes": [{"start_s": 0.5, "end_s": 1.5, "midi": 69.3, "target_midi": 69.0}],
...                   "ornaments": [{"type": "vibrato", "start_s": 0.5, "end_s": 1.0, "note": 0}]}}
>>> lay = PitchLayout(plan, width=200, height=100)
>>> [round(v, 1) for v in lay.notes[0].rect]   # x, y, w, h in pixels
[50.0, 42.0, 100.0, 8.0]
>>> lay.ornaments[0].group
'vibrato'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Ornament types grouped as the legend shows them, with their colours (RGB 0..1).
ORNAMENT_GROUPS: dict[str, str] = {
    "vibrato": "vibrato",
    "slide_in": "slide",
    "slide_out": "slide",
    "portamento": "slide",
    "grace": "grace",
    "trill": "trill",
    "mordent": "trill",
    "drift": "drift",
}
GROUP_COLOURS: dict[str, tuple[float, float, float]] = {
    "vibrato": (0.62, 0.35, 0.95),
    "slide": (1.0, 0.6, 0.1),
    "grace": (0.2, 0.8, 0.4),
    "trill": (0.95, 0.25, 0.3),
    "drift": (0.6, 0.6, 0.6),
}
GROUP_LABELS: dict[str, str] = {
    "vibrato": "vibrato",
    "slide": "slide 滑音",
    "grace": "grace note 倚音",
    "trill": "trill",
    "drift": "drift",
}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: Height of a note bar, in semitones.
NOTE_BAR_SEMITONES = 0.4


def midi_of(hz: float) -> float | None:
    return 69.0 + 12.0 * math.log2(hz / 440.0) if hz and hz > 0 else None


def note_name(midi: int) -> str:
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


@dataclass(frozen=True)
class NoteShape:
    index: int
    rect: tuple[float, float, float, float]  # x, y, w, h (the sung centre)
    target: tuple[float, float, float, float]  # x1, y, x2, y (the target pitch)
    midi: float
    target_midi: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class OrnamentShape:
    group: str
    kind: str
    rect: tuple[float, float, float, float]
    note: int


class PitchLayout:
    """Everything the pitch view draws, in pixels of a ``width`` x ``height`` area at (``x0``, ``y0``)."""

    def __init__(self, plan: dict[str, Any], *, width: float, height: float, x0: float = 0.0, y0: float = 0.0,
                 margin_semitones: float = 2.0):
        pitch = plan.get("pitch") or {}
        f0 = pitch.get("f0") or {}
        self.hop_s = float(f0.get("hop_s") or 0.01)
        hz = f0.get("hz") or []
        self.sung = [midi_of(float(h or 0.0)) for h in hz]
        self.note_records = list(pitch.get("notes") or [])
        self.ornament_records = list(pitch.get("ornaments") or [])
        settings = plan.get("settings") or {}
        self.strength = 0.8 if settings.get("correction") is None else float(settings["correction"])
        self.corrected = self._corrected()
        self.x0, self.y0, self.width, self.height = float(x0), float(y0), float(width), float(height)
        duration = len(self.sung) * self.hop_s
        for n in self.note_records:
            duration = max(duration, float(n["end_s"]))
        self.duration_s = duration or 1.0
        # the range follows the notes (a stray octave error in the raw curve must not squash the picture)
        pitches = [float(n["midi"]) for n in self.note_records] + [
            float(n.get("target_midi", n["midi"])) for n in self.note_records]
        if not pitches:
            pitches = [m for m in self.sung if m is not None]
        lo, hi = (min(pitches), max(pitches)) if pitches else (57.0, 81.0)
        self.midi_lo = math.floor(lo - margin_semitones)
        self.midi_hi = math.ceil(hi + margin_semitones)
        self.sung = [m if m is not None and self.midi_lo <= m <= self.midi_hi else None for m in self.sung]
        self.corrected = [m if m is not None and self.midi_lo <= m <= self.midi_hi else None for m in self.corrected]
        self.notes = [self._note(i, n) for i, n in enumerate(self.note_records)]
        self.ornaments = [self._ornament(o) for o in self.ornament_records]
        self.sung_lines = self._lines(self.sung)
        self.corrected_lines = self._lines(self.corrected)

    # -- coordinates ----------------------------------------------------------------------------

    def x(self, t: float) -> float:
        return self.x0 + self.width * t / self.duration_s

    def y(self, midi: float) -> float:
        return self.y0 + self.height * (midi - self.midi_lo) / max(1e-9, self.midi_hi - self.midi_lo)

    def time_at(self, x: float) -> float:
        return (x - self.x0) / self.width * self.duration_s

    def midi_at(self, y: float) -> float:
        return self.midi_lo + (y - self.y0) / self.height * (self.midi_hi - self.midi_lo)

    # -- shapes ---------------------------------------------------------------------------------

    def _corrected(self) -> list[float | None]:
        out = list(self.sung)
        for n in self.note_records:
            shift = self.strength * (float(n.get("target_midi", n["midi"])) - float(n["midi"]))
            lo = max(0, round(float(n["start_s"]) / self.hop_s))
            hi = min(len(out), round(float(n["end_s"]) / self.hop_s))
            for i in range(lo, hi):
                if out[i] is not None:
                    out[i] = out[i] + shift
        return out

    def _note(self, index: int, n: dict[str, Any]) -> NoteShape:
        x1, x2 = self.x(float(n["start_s"])), self.x(float(n["end_s"]))
        bar = self.height * NOTE_BAR_SEMITONES / (self.midi_hi - self.midi_lo)
        midi = float(n["midi"])
        target = float(n.get("target_midi", midi))
        return NoteShape(index, (x1, self.y(midi) - bar / 2, x2 - x1, bar), (x1, self.y(target), x2, self.y(target)),
                         midi, target, float(n["start_s"]), float(n["end_s"]))

    def _ornament(self, o: dict[str, Any]) -> OrnamentShape:
        group = ORNAMENT_GROUPS.get(str(o.get("type")), "drift")
        x1, x2 = self.x(float(o["start_s"])), self.x(float(o["end_s"]))
        note = int(o.get("note", -1))
        if 0 <= note < len(self.note_records):
            top = self.y(float(self.note_records[note]["midi"])) + self.height * 0.6 / (self.midi_hi - self.midi_lo)
        else:
            top = self.y0 + self.height - 8
        return OrnamentShape(group, str(o.get("type")), (x1, top, max(2.0, x2 - x1), 5.0), note)

    def _lines(self, curve: list[float | None]) -> list[list[float]]:
        """Voiced stretches as flat [x, y, x, y, ...] lists (one per stretch)."""
        lines: list[list[float]] = []
        current: list[float] = []
        for i, m in enumerate(curve):
            if m is None:
                if len(current) >= 4:
                    lines.append(current)
                current = []
                continue
            current.extend((self.x(i * self.hop_s), self.y(m)))
        if len(current) >= 4:
            lines.append(current)
        return lines

    def grid(self) -> list[tuple[int, float]]:
        """Semitone lines (midi, y) for the natural notes C, E, G, A in range (labels of the pitch axis)."""
        return [(m, self.y(m)) for m in range(int(self.midi_lo), int(self.midi_hi) + 1) if m % 12 in (0, 4, 7, 9)]

    def groups_present(self) -> list[str]:
        seen: list[str] = []
        for o in self.ornaments:
            if o.group not in seen:
                seen.append(o.group)
        return seen
