"""Label rules of the pitch model's training data (models/pitch/make_pitch_data.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "pitch"))
make_pitch_data = pytest.importorskip("make_pitch_data")


def _stretch(level_tail_db):
    """Unvoiced, 20 voiced frames at 0 dB ending in ``level_tail_db``, unvoiced."""
    level = np.r_[np.full(5, -90.0), np.zeros(20), level_tail_db, np.full(5, -90.0)]
    f0 = np.where(level > -90, 220.0, 0.0).astype(np.float32)
    return f0, level


def test_trim_releases_unvoices_only_the_faded_end_of_a_stretch():
    f0, level = _stretch(np.array([-3.0, -8.0, -12.0, -20.0, -30.0]))
    out = make_pitch_data.trim_releases(f0, level, end_db=10.0)
    voiced = np.flatnonzero(out > 0)
    assert voiced[0] == 5 and voiced[-1] == 26  # the -8 dB frame is the last one kept
    assert np.all(out[voiced] == 220.0)
    assert np.all(f0[27:30] == 220.0)  # the input is not changed


def test_trim_releases_more_headroom_keeps_more_of_the_release():
    f0, level = _stretch(np.array([-3.0, -8.0, -12.0, -20.0, -30.0]))
    kept = [np.sum(make_pitch_data.trim_releases(f0, level, end_db=d) > 0) for d in (6.0, 10.0, 15.0, 40.0)]
    assert kept == [21, 22, 23, 25]


def test_trim_releases_measures_against_the_stretch_end_not_the_whole_take():
    # a loud phrase, then a quiet one: the quiet phrase is not trimmed away for being 20 dB down
    loud_f0, loud = _stretch(np.array([-15.0]))
    quiet_f0, quiet = _stretch(np.array([-15.0]))
    f0 = np.r_[loud_f0, quiet_f0]
    level = np.r_[loud, quiet - 20.0]
    out = make_pitch_data.trim_releases(f0, level, end_db=10.0)
    assert np.sum(out[: len(loud_f0)] > 0) == 20 and np.sum(out[len(loud_f0):] > 0) == 20


def test_trim_releases_on_a_synthetic_phrase_cuts_inside_the_release():
    from tools.corpus.voice import NoteSpec, synthesize_voice

    sr = make_pitch_data.SR
    take = synthesize_voice([NoteSpec(60, 0.2, 0.5, consonant=None)], sr=sr, voice="female", seed=1, breaths=False)
    n_frames = len(take.audio) // make_pitch_data.HOP_LENGTH + 1
    f0 = make_pitch_data.frame_truth(take.f0_hz, n_frames)
    level = make_pitch_data.frame_level_db(take.audio, n_frames)
    out = make_pitch_data.trim_releases(f0, level, end_db=10.0)
    end_truth, end_trimmed = np.flatnonzero(f0 > 0)[-1], np.flatnonzero(out > 0)[-1]
    # the synthetic release lasts 70 ms: the label now ends 10-60 ms before the voice falls silent
    assert 1 <= end_truth - end_trimmed <= 6
    assert np.flatnonzero(out > 0)[0] == np.flatnonzero(f0 > 0)[0]  # onsets are not touched


def test_voicing_ignore_leaves_out_the_reverb_tail_only_in_reverberant_clips():
    f0 = np.r_[np.zeros(5), np.full(10, 200.0), np.zeros(20)].astype(np.float32)
    dry = make_pitch_data.voicing_ignore(f0, reverb=False)
    wet = make_pitch_data.voicing_ignore(f0, reverb=True, tail_s=0.05)
    assert not dry.any()
    assert np.flatnonzero(wet).tolist() == [15, 16, 17, 18, 19]


def test_trim_to_teacher_ends_a_stretch_where_the_teacher_stops():
    f0 = np.r_[np.zeros(5), np.full(30, 200.0), np.zeros(10), np.full(30, 300.0), np.zeros(5)].astype(np.float32)
    teacher = f0 > 0
    teacher[31:35] = False  # the teacher stops 4 frames before the first stretch's end
    teacher[20:22] = False  # and drops out mid-note: not an end, kept
    out = make_pitch_data.trim_to_teacher(f0, teacher, max_trim_s=0.15)
    assert np.flatnonzero(out[:45] > 0).tolist() == list(range(5, 31))
    np.testing.assert_array_equal(out[45:], f0[45:])  # the second stretch ends where the teacher does


def test_trim_to_teacher_keeps_a_stretch_the_teacher_misses():
    f0 = np.r_[np.zeros(5), np.full(30, 200.0), np.zeros(5)].astype(np.float32)
    teacher = np.zeros(len(f0), bool)
    teacher[5:10] = True  # voiced only at the start: more than max_trim_s before the end
    np.testing.assert_array_equal(make_pitch_data.trim_to_teacher(f0, teacher, max_trim_s=0.15), f0)
    np.testing.assert_array_equal(make_pitch_data.trim_to_teacher(f0, teacher, max_trim_s=0.3) > 0,
                                  np.r_[np.zeros(5), np.ones(5), np.zeros(30)] > 0)


def test_dsp_teacher_voicing_follows_the_dry_voice():
    from tools.corpus.voice import NoteSpec, synthesize_voice

    sr = make_pitch_data.SR
    take = synthesize_voice([NoteSpec(57, 0.2, 0.6, consonant=None)], sr=sr, voice="male", seed=2, breaths=False)
    n_frames = len(take.audio) // make_pitch_data.HOP_LENGTH + 1
    voiced = make_pitch_data.dsp_teacher_voicing(take.audio, n_frames)
    truth = make_pitch_data.frame_truth(take.f0_hz, n_frames) > 0
    assert voiced.shape == (n_frames,)
    assert np.mean(voiced[truth]) > 0.9 and np.mean(voiced[~truth]) < 0.1


def test_data_options_round_trip_through_the_command_line():
    import argparse

    ap = argparse.ArgumentParser()
    make_pitch_data.add_data_options(ap)
    defaults = make_pitch_data.data_options(ap.parse_args([]))
    assert defaults == make_pitch_data.data_option_defaults()
    # at the defaults nothing is passed on and the data file keeps its plain name
    assert make_pitch_data.data_options_argv(defaults) == [] and make_pitch_data.data_options_tag(defaults) == ""
    chosen = make_pitch_data.data_options(ap.parse_args(["--release-end-db", "10", "--varied-releases",
                                                          "--end-teacher", "dsp", "--bleed-p", "0.5",
                                                          "--real-clips", "5"]))
    argv = make_pitch_data.data_options_argv(chosen)
    assert make_pitch_data.data_options(ap.parse_args(argv)) == chosen
    tag = make_pitch_data.data_options_tag(chosen)
    assert tag != make_pitch_data.data_options_tag({**chosen, "bleed_p": 0.3})  # every option is in the name


def test_make_pitch_data_writes_a_whole_file_into_a_new_folder(tmp_path):
    out = tmp_path / "new" / "folder" / "train.npz"
    assert make_pitch_data.main(["--clips", "2", "--duration-s", "3.0", "--workers", "1", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["x"].shape[0] == data["f0_hz"].shape[0] == 600  # 2 clips of 300 frames
    assert set(np.unique(data["clip"])) == {0, 1}
    assert [p.name for p in out.parent.iterdir()] == ["train.npz"]  # no temporary file left behind


@pytest.fixture
def one_real_voice(tmp_path, monkeypatch):
    """A stand-in 'real' recording (a synthetic voice singing A3 = 220 Hz for 1.5 s) under a
    temporary shared-data folder, as ``--real-clips`` reads them."""
    from melisma.audio_io import write_audio

    from tools.corpus.voice import NoteSpec, synthesize_voice

    sr = make_pitch_data.SR
    take = synthesize_voice([NoteSpec(57, 0.3, 1.5, consonant=None)], sr=sr, duration_s=2.2, voice="female", seed=3,
                            breaths=False)
    name = f"voice_{tmp_path.name}.wav"  # the teacher is cached by name: one name per test
    write_audio(tmp_path / name, take.audio, sr=sr)
    monkeypatch.setattr(make_pitch_data, "SHARED", tmp_path)
    return ((name, "test"),)


def test_real_clip_labels_follow_each_stretch_s_transposition(one_real_voice):
    x, f0, ignore, info = make_pitch_data.real_clip_arrays(5_000_001, voices=one_real_voice, crepe=False)
    assert x.shape == (len(f0), 5, 128) and ignore.shape == f0.shape
    assert len(info["real"]) >= 3  # 8 s of 1.5 s notes set 0.15-0.8 s apart
    times = np.arange(len(f0)) * make_pitch_data.HOP_LENGTH / make_pitch_data.SR
    for stretch in info["real"]:
        inside = (times >= stretch["at_s"]) & (times < stretch["at_s"] + stretch["seconds"]) & (f0 > 0)
        assert inside.sum() > 30  # the sung note is labelled voiced
        expected = 220.0 * 2 ** (stretch["semitones"] / 12)
        cents = 1200 * np.log2(f0[inside] / expected)
        assert np.median(np.abs(cents)) < 20, stretch  # the label moved with the transposition
    gaps = f0 == 0
    assert gaps.sum() > 50 and not ignore[gaps & (times < info["real"][0]["at_s"])].any()  # leading silence is unvoiced


def test_real_clips_are_reproducible_from_their_seed(one_real_voice):
    a = make_pitch_data.real_clip_arrays(5_000_002, voices=one_real_voice, crepe=False)
    b = make_pitch_data.real_clip_arrays(5_000_002, voices=one_real_voice, crepe=False)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[3] == b[3]


def test_real_voice_teacher_names_a_missing_recording(tmp_path, monkeypatch):
    monkeypatch.setattr(make_pitch_data, "SHARED", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"real training voice .*missing"):
        make_pitch_data.real_voice_teacher("nowhere/absent.wav", crepe=False)
