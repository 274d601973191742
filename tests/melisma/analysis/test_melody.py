"""Reading a reference melody from MIDI: tempo changes, drums, overlaps and bad files."""

from __future__ import annotations

import mido
import pytest
from melisma.analysis.melody import MelodyNote, load_melody
from melisma.errors import AnalysisError, ConfigError


def _save(tmp_path, tracks, name="m.mid"):
    mid = mido.MidiFile(ticks_per_beat=480)
    for msgs in tracks:
        tr = mido.MidiTrack()
        tr.extend(msgs)
        mid.tracks.append(tr)
    path = tmp_path / name
    mid.save(path)
    return path


def test_tempo_change_and_drums(tmp_path):
    conductor = [mido.MetaMessage("set_tempo", tempo=500000, time=0),  # 120 bpm
                 mido.MetaMessage("set_tempo", tempo=1000000, time=960)]  # 60 bpm after two beats
    vocal = [mido.Message("note_on", note=60, velocity=80, time=0), mido.Message("note_off", note=60, time=480),
             mido.Message("note_on", note=62, velocity=80, time=480),
             mido.Message("note_on", note=62, velocity=0, time=480)]  # velocity 0 = off
    drums = [mido.Message("note_on", channel=9, note=36, velocity=100, time=0),
             mido.Message("note_off", channel=9, note=36, time=240)]
    notes = load_melody(_save(tmp_path, [conductor, vocal, drums]))
    assert notes == [MelodyNote(0.0, 0.5, 60), MelodyNote(1.0, 2.0, 62)]
    assert notes[0].to_dict() == {"start_s": 0.0, "end_s": 0.5, "midi": 60}


def test_note_never_switched_off_ends_with_the_file(tmp_path):
    msgs = [mido.Message("note_on", note=64, velocity=80, time=0),
            mido.Message("note_on", note=67, velocity=80, time=480), mido.Message("note_off", note=67, time=480)]
    notes = load_melody(_save(tmp_path, [msgs]))
    assert [(n.midi, n.end_s) for n in notes] == [(64, 1.0), (67, 1.0)]


def test_channel_filter(tmp_path):
    msgs = [mido.Message("note_on", channel=2, note=64, velocity=80, time=0),
            mido.Message("note_off", channel=2, note=64, time=480)]
    path = _save(tmp_path, [msgs])
    assert load_melody(path, channel=2)[0].midi == 64
    with pytest.raises(AnalysisError, match="no notes on channel 0"):
        load_melody(path, channel=0)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such melody file"):
        load_melody(tmp_path / "missing.mid")
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"this is not a midi file at all")
    with pytest.raises(ConfigError, match="not a readable MIDI file"):
        load_melody(junk)
    empty = _save(tmp_path, [[mido.MetaMessage("set_tempo", tempo=500000, time=0)]], name="empty.mid")
    with pytest.raises(AnalysisError, match="no notes"):
        load_melody(empty)
