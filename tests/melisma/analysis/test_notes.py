"""Note segmentation and targets: centres of detuned and ornamented notes, scales, melodies."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.key import parse_key
from melisma.analysis.melody import MelodyNote
from melisma.analysis.notes import Note, assign_targets, segment_notes
from melisma.analysis.pitch import PitchTrack, track_pitch

from tools.corpus.voice import NoteSpec, synthesize_voice

ORNAMENTED = [
    NoteSpec(60, 0.2, 0.5, detune_cents=35),
    NoteSpec(62, 0.7, 0.6, detune_cents=-25, ornaments=[{"type": "vibrato", "rate_hz": 6.0, "extent_cents": 150}]),
    NoteSpec(64, 1.5, 0.5, detune_cents=20, ornaments=[{"type": "slide_in", "duration_ms": 150, "interval_cents": -250}]),
    NoteSpec(65, 2.0, 0.4, detune_cents=-40, ornaments=[{"type": "grace", "duration_ms": 90, "interval_cents": 200}]),
    NoteSpec(67, 2.6, 0.6, detune_cents=10, ornaments=[{"type": "slide_out", "duration_ms": 200, "interval_cents": -300}]),
    NoteSpec(69, 3.5, 0.6, detune_cents=-15, ornaments=[{"type": "trill", "rate_hz": 6.5, "interval_cents": 200}]),
    NoteSpec(67, 4.3, 0.4, detune_cents=30, onset_rise_cents=40, onset_rise_ms=80),
    NoteSpec(64, 4.7, 0.5, detune_cents=-30, ornaments=[{"type": "drift", "drift_cents": 30}]),
]


@pytest.fixture(scope="module")
def take():
    return synthesize_voice(ORNAMENTED, sr=16000, seed=2, breaths=False)


def _check_notes(notes: list[Note], truth: list[dict], tol_cents: float) -> None:
    assert len(notes) == len(truth), [(round(n.start_s, 2), round(n.midi, 2)) for n in notes]
    for n, t in zip(notes, truth, strict=False):
        assert abs(n.start_s - t["start_s"]) < 0.06, (n, t)
        assert abs(n.end_s - t["end_s"]) < 0.06, (n, t)
        assert abs(100 * (n.midi - t["midi"])) < tol_cents, (n, t)


def test_centres_of_detuned_ornamented_notes_on_exact_f0(take):
    track = PitchTrack(take.hop_s, take.f0_hz, np.ones_like(take.f0_hz))
    _check_notes(segment_notes(track), take.notes, tol_cents=8)


def test_centres_through_the_pitch_tracker(take):
    _check_notes(segment_notes(track_pitch(take.audio, sr=take.sr)), take.notes, tol_cents=12)


def test_cents_error_against_a_scale_follows_the_detune(take):
    track = PitchTrack(take.hop_s, take.f0_hz, np.ones_like(take.f0_hz))
    notes = assign_targets(segment_notes(track), scale=parse_key("C major"))
    for n, t in zip(notes, take.notes, strict=False):
        assert n.target_midi == t["target_midi"]
        assert abs(n.cents_error - t["detune_cents"]) < 8


def test_legato_steps_split_and_close_neighbours_merge():
    hop = 0.005
    midi = np.r_[np.full(80, 60.0), np.full(80, 61.0), np.full(80, 61.2), np.full(80, 59.0)]
    hz = 440.0 * 2 ** ((midi - 69) / 12)
    notes = segment_notes(PitchTrack(hop, hz, np.ones_like(hz)))
    assert [round(n.midi, 1) for n in notes] == [60.0, 61.1, 59.0]
    assert abs(notes[1].start_s - 0.4) < 0.02


def test_assign_targets_with_a_reference_melody_an_octave_up():
    notes = [Note(0.0, 0.4, 47.8), Note(0.5, 0.9, 50.3), Note(3.0, 3.4, 52.1)]
    melody = [MelodyNote(0.0, 0.45, 60), MelodyNote(0.45, 0.95, 62)]
    out = assign_targets(notes, melody=melody, scale=parse_key("E minor"))
    assert [n.target_midi for n in out] == [48.0, 50.0, 52.0]  # the last one: from the scale
    assert round(out[1].cents_error) == 30
    assert assign_targets([Note(0, 1, 61.45)])[0].target_midi == 61.0


def test_pentatonic_targets_snap_to_the_mode():
    notes = assign_targets([Note(0, 1, 65.4), Note(1, 2, 71.3)], scale=parse_key("C gong"))
    assert [n.target_midi for n in notes] == [64.0, 72.0]  # F and B are not in C gong


def test_note_roundtrip_and_empty_track():
    n = Note(0.1, 0.5, 60.123, 60.0, 12.3, 0.9)
    assert Note.from_dict(n.to_dict()) == Note(0.1, 0.5, 60.123, 60.0, 12.3, 0.9)
    empty = PitchTrack(0.005, np.zeros(100), np.zeros(100))
    assert segment_notes(empty) == []


@pytest.mark.shared_data
def test_vocadito_notes_match_the_annotation(shared_data):
    from melisma.audio_io import load_audio

    root = shared_data / "vocadito"
    y, sr = load_audio(root / "Audio" / "vocadito_1.wav", mono=True)
    ref = np.loadtxt(root / "Annotations" / "Notes" / "vocadito_1_notesA1.csv", delimiter=",")
    notes = segment_notes(track_pitch(y, sr=sr))
    hits = 0
    for onset, hz, dur in ref:
        mid = onset + dur / 2
        cands = [n for n in notes if n.start_s <= mid <= n.end_s]
        ref_midi = 69 + 12 * np.log2(hz / 440)
        hits += bool(cands) and abs(cands[0].midi - ref_midi) < 0.5
    assert hits / len(ref) >= 0.8


def test_in_tune_chromatic_notes_keep_their_own_semitone():
    """Issue 13: without a melody, a note sung in tune outside the key is never pulled a semitone."""
    c_major = parse_key("C major")
    sung = [Note(0, 1, 63.08), Note(1, 2, 66.9), Note(2, 3, 70.12), Note(3, 4, 61.5)]  # Eb, F#-, Bb (blue), between C#/D
    out = assign_targets(sung, scale=c_major)
    assert [n.target_midi for n in out[:3]] == [63.0, 67.0, 70.0]  # 66.9 is in tune on G (in the key)
    assert out[3].target_midi == 62.0  # 50 c from any semitone: the key decides
    # no note's correction exceeds the distance to its own nearest semitone when in tune
    for n in out[:3]:
        assert abs(n.cents_error) <= 25.0


def test_an_unsure_key_moves_fewer_notes():
    sung = [Note(0, 1, 61.35)]  # 35 c sharp of C#, outside C major
    sure = assign_targets(sung, scale=parse_key("C major"), key_confidence=1.0)[0]
    unsure = assign_targets(sung, scale=parse_key("C major"), key_confidence=0.3)[0]
    assert sure.target_midi == 62.0 and unsure.target_midi == 61.0
