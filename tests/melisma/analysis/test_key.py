"""Keys: parsing, pentatonic modes, snapping, estimation from chords, backings and notes."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.key import MODES, PENTATONIC_MODES, Scale, estimate_key, estimate_key_from_notes, parse_key
from melisma.analysis.notes import Note
from melisma.errors import ConfigError


@pytest.mark.parametrize("text,name", [
    ("C", "C major"), ("Am", "A minor"), ("A minor", "A minor"), ("F# major", "F# major"), ("Bb", "Bb major"),
    ("eb gong", "Eb gong"), ("D zhi", "D zhi"), ("G 徵", "G zhi"), ("A yu", "A yu"), ("E jue", "E jue"),
    ("D shang", "D shang"), ("c#m", "C# minor"), ("Gb", "F# major"), ("B♭ minor", "Bb minor"),
])
def test_parse_key(text, name):
    assert parse_key(text).name == name


@pytest.mark.parametrize("bad", ["H major", "C dorian-ish", "", "12", "Cmajorr"])
def test_parse_key_errors_show_examples(bad):
    with pytest.raises(ConfigError, match="D zhi"):
        parse_key(bad)


def test_pentatonic_modes_share_the_gong_pitch_classes():
    gong = set(parse_key("C gong").pitch_classes)
    assert set(parse_key("D shang").pitch_classes) == gong
    assert set(parse_key("E jue").pitch_classes) == gong
    assert set(parse_key("G zhi").pitch_classes) == gong
    assert set(parse_key("A yu").pitch_classes) == gong
    assert parse_key("D zhi").pitch_classes == (2, 4, 7, 9, 11)


def test_nearest_midi_snaps_within_the_scale():
    s = parse_key("A yu")  # A C D E G
    assert [s.nearest_midi(m) for m in (57.2, 58.6, 59.4, 65.0, 66.2)] == [57, 60, 60, 64, 67]
    minor = parse_key("A minor")
    assert all(minor.nearest_midi(m + 0.3) % 12 in minor.pitch_classes for m in range(48, 72))
    assert Scale.from_dict(s.to_dict()) == s


def _chord_audio(progression: list[list[int]], *, sr: int = 11025, chord_s: float = 1.0) -> np.ndarray:
    """Chords of harmonic tones (bass an octave down), one per ``chord_s``."""
    out = []
    t = np.arange(int(chord_s * sr)) / sr
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    for chord in progression:
        y = np.zeros_like(t)
        for _j, midi in enumerate([*chord, chord[0] - 12]):
            f = 440.0 * 2 ** ((midi - 69) / 12)
            y += sum(0.5 / k * np.sin(2 * np.pi * k * f * t) for k in range(1, 5) if k * f < sr / 2)
        out.append(y * env)
    return (0.1 * np.concatenate(out)).astype(np.float32)


@pytest.mark.parametrize("tonic_name,mode", [("C", "major"), ("G", "major"), ("Eb", "major"), ("A", "minor"),
                                             ("D", "minor"), ("F#", "minor")])
def test_estimate_key_on_chord_progressions(tonic_name, mode):
    key = parse_key(f"{tonic_name} {mode}")
    t = key.tonic_pc + 60
    if mode == "major":  # I IV V I vi IV V I
        prog = [[t, t + 4, t + 7], [t + 5, t + 9, t + 12], [t + 7, t + 11, t + 14], [t, t + 4, t + 7],
                [t + 9, t + 12, t + 16], [t + 5, t + 9, t + 12], [t + 7, t + 11, t + 14], [t, t + 4, t + 7]]
    else:  # i iv V i VI iv v i
        prog = [[t, t + 3, t + 7], [t + 5, t + 8, t + 12], [t + 7, t + 11, t + 14], [t, t + 3, t + 7],
                [t + 8, t + 12, t + 15], [t + 5, t + 8, t + 12], [t + 7, t + 10, t + 14], [t, t + 3, t + 7]]
    est = estimate_key(_chord_audio(prog), sr=11025)
    assert est.scale == key, est.to_dict()
    assert 0 < est.confidence <= 1 and len(est.candidates) == 5


def test_estimate_key_on_synthetic_backings():
    from tools.corpus import make_scenario

    right = same_scale = 0
    keys = ["C major", "A minor", "D major", "E minor", "Bb major", "G minor"]
    for seed, k in enumerate(keys):
        sc = make_scenario(seed=seed, duration_s=8.0, sr=16000, backing_renderer="numpy", key=k)
        est = estimate_key(sc.backing, sr=sc.sr)
        right += est.scale.name == sc.truth["key"]["name"]
        same_scale += set(est.scale.pitch_classes) == set(sc.truth["key"]["pitch_classes"])
    assert same_scale == len(keys)
    assert right >= len(keys) - 2  # relative major/minor can swap on a short backing


def test_pentatonic_mode_from_sung_notes():
    # a zhi-mode tune on D (D E G A B) that starts and ends on D, with D and A prominent
    seq = [62, 64, 67, 69, 67, 64, 62, 69, 71, 69, 67, 64, 62, 62, 57, 62]
    notes = [Note(i * 0.5, i * 0.5 + 0.45, m + 0.1) for i, m in enumerate(seq)]
    est = estimate_key_from_notes(notes, modes=tuple(MODES))
    assert est.scale.name == "D zhi", est.to_dict()
    assert estimate_key_from_notes(notes).scale.mode in ("major", "minor")
    assert len(PENTATONIC_MODES) == 5


def test_estimate_key_errors():
    from melisma.errors import AnalysisError

    with pytest.raises(AnalysisError):
        estimate_key_from_notes([])
    with pytest.raises(AnalysisError):
        estimate_key(np.zeros(20000, np.float32), sr=16000)
    with pytest.raises(ConfigError):
        estimate_key_from_notes([Note(0, 1, 60)], modes=("lydian",))
