"""The melody the note benchmark builds from an annotation (tools/eval_notes.py): skipped and added
notes where it says, and a MIDI file the engine reads back as that melody."""

from __future__ import annotations

import numpy as np
from melisma.analysis.melody import load_melody

from tools import eval_notes as ev
from tools.eval_notes import file_offset_cents, make_melody, write_midi

REF = np.array([[0.5, 0.9, 60.2], [1.0, 1.4, 62.1], [1.5, 1.9, 63.8], [3.0, 3.4, 65.0], [3.5, 3.9, 67.3]])


def test_make_melody_leaves_one_note_out_and_puts_one_in_the_longest_rest(tmp_path):
    mel, index, inserted = make_melody(REF, np.random.default_rng(3))
    assert len(mel) == len(REF)  # one out, one in
    assert index.count(-1) == 1  # the note the singer "added" has no melody note
    assert 1.9 < inserted[0] < inserted[1] < 3.0  # in the rest between 1.9 and 3.0
    starts = [m[0] for m in mel]
    assert starts == sorted(starts)
    for i, j in enumerate(index):
        if j >= 0:
            assert mel[j][2] == round(REF[i, 2])
            assert abs(mel[j][0] - REF[i, 0]) <= 0.15 + 0.25 + 1e-9  # common offset + own jitter
    path = tmp_path / "m.mid"
    write_midi(path, mel)
    back = load_melody(path)
    assert [n.midi for n in back] == [m[2] for m in mel]
    assert np.allclose([n.start_s for n in back], starts, atol=0.002)


def test_file_offset_is_the_median_difference_of_overlapping_notes():
    est = REF.copy()
    est[:, 2] += 0.2
    est[2, 2] += 3.0  # a wrong note (or another voice's) is no tuning offset
    est[3, 2] -= 0.9
    assert abs(file_offset_cents(REF, est) - 20.0) < 1e-6
    assert file_offset_cents(REF, np.zeros((0, 3))) == 0.0


def test_an_ssvd_folder_is_scored_whole_less_its_transposed_recording(tmp_path):
    """``--ssvd DIR`` takes every recording with its annotation; 101666 (annotation transposed) never."""
    from melisma.audio_io import write_audio

    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)).astype(np.float32)
    for stem in ("100135", "101666", "no-notes"):
        write_audio(tmp_path / f"{stem}.flac", tone, sr=16000)
    for stem in ("100135", "101666"):
        (tmp_path / f"{stem}.txt").write_text("0.10\t0.40\t57.0\n")
    clips = ev.load_clips(tmp_path, which="ssvd", ssvd_dir=tmp_path)
    assert [c.name for c in clips] == ["ssvd/100135"]
    assert clips[0].remove_offset and clips[0].ref.tolist() == [[0.1, 0.4, 57.0]]
    assert ev.main(["notes", "--data", str(tmp_path), "--which", "ssvd", "--ssvd", str(tmp_path / "none"),
                    "--systems", "melisma"]) == 2  # nothing to score: said, and a non-zero exit
