"""Issue 13: without a melody, correction never turns an in-tune note into a wrong note.

Generated takes with known truth: a harmonic voice sung along an exact f0 contour, through the
engine's analysis (the user's key, C major) and its correction at 1, the corrected vocal tracked
again. Each note is measured as an independent listener would (the median of its middle 60 %).
The chromatic notes below wander the way real amateur notes do (a lower stretch, then the pitch
they are heard at), so their level centre sits more than 25 c from their own semitone while their
middle is in tune on it: the old targets snapped them to the key's neighbour a semitone away.
"""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.intonation import analyze_pitch
from melisma.analysis.key import parse_key
from melisma.analysis.notes import Note, assign_targets, stable_median
from melisma.analysis.pitch import PitchTrack, midi_to_hz, track_pitch
from melisma.render.pitch import correct_vocal, correction_from_sliders

SR = 16000
HOP = 0.005


def _hold(midi: float, s: float) -> np.ndarray:
    return np.full(int(round(s / HOP)), float(midi))


def _sing(contour: np.ndarray) -> np.ndarray:
    """A voiced harmonic tone following ``contour`` (MIDI per 5 ms frame, 0 = silence)."""
    t = np.arange(int(contour.size * HOP * SR)) / SR
    m = np.interp(t, np.arange(contour.size) * HOP, contour)
    voiced = np.interp(t, np.arange(contour.size) * HOP, (contour > 0).astype(float)) > 0.5
    hz = np.where(voiced, midi_to_hz(np.where(m > 0, m, 60.0)), 0.0)
    phase = 2 * np.pi * np.cumsum(hz) / SR
    y = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 9))
    env = np.convolve(voiced.astype(float), np.ones(160) / 160, mode="same")  # 10 ms fades
    return (0.3 * y * env).astype(np.float32)


#: (name, contour of the chromatic note, its semitone). Around it: E4 and G4, in C major.
CHROMATIC = [
    # F#4 (outside C major) reached by a 120 ms slide from E4, first held low, then in tune
    ("slide into F#", np.r_[np.linspace(64.0, 65.6, 24), _hold(65.62, 0.12), _hold(65.92, 0.2), _hold(65.6, 0.08)], 66),
    # Bb4 (outside C major, the blue seventh) whose first 60 ms are a scoop from a tone below
    ("scoop into Bb", np.r_[np.linspace(68.0, 69.6, 12), _hold(69.62, 0.13), _hold(69.93, 0.22), _hold(69.6, 0.06)], 70),
]


def _take(note: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    rest = _hold(0.0, 0.15)
    before = np.r_[_hold(0.0, 0.1), _hold(64.0, 0.5), rest]
    contour = np.r_[before, note, rest, _hold(67.0, 0.5), _hold(0.0, 0.2)]
    start = before.size * HOP
    return contour, (start, start + note.size * HOP)


def _middle(track: PitchTrack, span: tuple[float, float]) -> float:
    return stable_median(track, Note(span[0], span[1], 0.0))


@pytest.mark.parametrize(("name", "note", "semitone"), CHROMATIC, ids=[c[0] for c in CHROMATIC])
def test_an_in_tune_chromatic_note_stays_on_its_semitone_after_correction(name, note, semitone):
    contour, span = _take(note)
    y = _sing(contour)
    truth = _middle(PitchTrack(HOP, np.where(contour > 0, midi_to_hz(np.where(contour > 0, contour, 60)), 0.0),
                               np.ones(contour.size)), span)
    assert abs(truth - semitone) < 0.15  # the note is heard in tune on its (chromatic) semitone

    pitch = analyze_pitch(y, sr=SR, key="C", scale="major")
    ours = [n for n in pitch["notes"] if n["start_s"] < span[1] and n["end_s"] > span[0] and n["end_s"] - n["start_s"] > 0.2]
    assert [n["target_midi"] for n in ours] == [float(semitone)], ours  # its own semitone, not the key's neighbour
    corrected, report = correct_vocal(y, pitch, sr=SR, settings=correction_from_sliders({}, correction=1.0))
    after = _middle(track_pitch(corrected, sr=SR), span)
    assert round(after) == semitone, (name, after)
    assert abs(after - semitone) < 0.15  # and corrected onto it, not away
    # correction never moves a note more than the distance to its own target
    for c in report["corrections"]:
        if c["target_midi"] is not None:
            assert abs(c["shift_cents"]) <= abs(c["cents_error_before"]) + 1e-6


def test_a_note_in_tune_by_its_middle_is_moved_from_its_middle():
    """The level centre of a wandering note (66.4, off any semitone) is not what it is heard at (65.9)."""
    m = np.r_[_hold(66.45, 0.12), _hold(65.9, 0.3), _hold(66.45, 0.12)]
    track = PitchTrack(HOP, midi_to_hz(m), np.ones(m.size))
    n = assign_targets([Note(0.0, m.size * HOP, 66.4)], scale=parse_key("C major"), key_confidence=1.0, track=track)[0]
    assert n.target_midi == 66.0 and abs(n.midi - 65.9) < 0.01 and abs(n.cents_error + 10.0) < 1.0
    # without the track the level centre alone decides (40 c from F#: the key's G)
    assert assign_targets([Note(0.0, 0.5, 66.4)], scale=parse_key("C major"))[0].target_midi == 67.0


def test_a_wandering_note_is_not_snapped_to_a_semitone_neither_centre_names():
    """Level centre 65.45 (F, 45 c), middle 65.62 (F#, 38 c), neither in tune; C gong (C D E G A) has
    neither F nor F#, and its nearest pitch E is a third semitone: the note keeps its own F."""
    m = np.r_[_hold(65.3, 0.1), _hold(65.62, 0.3), _hold(65.3, 0.1)]
    track = PitchTrack(HOP, midi_to_hz(m), np.ones(m.size))
    gong = parse_key("C gong")
    n = assign_targets([Note(0.0, m.size * HOP, 65.45)], scale=gong, key_confidence=1.0, track=track)[0]
    assert n.target_midi == 65.0
    # without the track (one view) the key still decides
    assert assign_targets([Note(0.0, 0.5, 65.45)], scale=gong, key_confidence=1.0)[0].target_midi == 64.0
