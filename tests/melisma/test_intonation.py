"""Pitch correction through the plan and the CLI: analyze → notes/ornaments/key, correct at render.

Synthetic takes from tools/corpus have detuned notes with vibrato, slides and grace notes of
known parameters; the corrected audio is re-tracked with the engine's own tracker and compared
with the truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma import audio_io
from melisma.analysis.pitch import DspPitchTracker, hz_to_midi
from melisma.cli import main
from melisma.errors import ConfigError
from melisma.render.pitch import correction_from_sliders

from tools.corpus.scenarios import make_scenario

SR = 48000


@pytest.fixture(scope="module")
def detuned(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("detuned")
    sc = make_scenario(seed=21, duration_s=12.0, sr=SR, detune_cents_max=60.0, backing_renderer="numpy")
    take = folder / "take.wav"
    audio_io.write_audio(take, sc.clean_vocal, sr=SR)
    melody = folder / "melody.mid"
    sc.melody_midi.save(str(melody))
    return {"take": take, "melody": melody, "truth": sc.truth, "sc": sc}


def note_errors(audio: np.ndarray, truth: dict, *, against: str) -> np.ndarray:
    """|cents| between each truth note's median tracked pitch (middle half) and its target or sung centre."""
    track = DspPitchTracker().track(audio, sr=SR)
    midi = hz_to_midi(track.hz)
    errors = []
    for note in truth["notes"]:
        length = note["end_s"] - note["start_s"]
        if length < 0.25:
            continue
        a = int((note["start_s"] + 0.25 * length) / track.hop_s)
        b = int((note["end_s"] - 0.25 * length) / track.hop_s)
        seg = midi[a:b]
        seg = seg[np.isfinite(seg) & (track.hz[a:b] > 0)]
        if seg.size < 5:
            continue
        ref = note["target_midi"] if against == "target" else note["midi"]
        errors.append(100 * abs(np.median(seg) - ref))
    return np.asarray(errors)


def test_correct_moves_note_centres_to_target(detuned, tmp_path, capsys) -> None:
    truth = detuned["truth"]
    out, report_path, plot = tmp_path / "fixed.wav", tmp_path / "r.json", tmp_path / "pitch.png"
    code = main(["correct", str(detuned["take"]), "-o", str(out), "--key", truth["key"]["name"], "--correction", "1",
                 "--report", str(report_path), "--plot", str(plot), "--report-frames", "-q"])
    assert code == 0, capsys.readouterr().err
    before = note_errors(audio_io.load_audio(detuned["take"], mono=True)[0], truth, against="target")
    after = note_errors(audio_io.load_audio(out, mono=True)[0], truth, against="target")
    assert np.median(before) > 15.0  # the take really was out of tune
    assert np.median(after) < 8.0
    report = json.loads(report_path.read_text())
    assert report["pitch"]["key"]["source"] == "user"
    assert len(report["pitch"]["notes"]) >= 0.6 * len(truth["notes"])
    assert {o["type"] for o in report["pitch"]["ornaments"]} & {"vibrato", "slide_in", "slide_out", "portamento"}
    assert len(report["pitch"]["target_f0"]["hz"]) == len(report["pitch"]["f0"]["hz"])
    assert plot.stat().st_size > 10_000


def test_correction_zero_leaves_the_take_untouched(detuned, tmp_path) -> None:
    out = tmp_path / "same.wav"
    assert main(["correct", str(detuned["take"]), "-o", str(out), "--correction", "0", "-q"]) == 0
    a, _ = audio_io.load_audio(detuned["take"], mono=True)
    b, _ = audio_io.load_audio(out, mono=True)
    assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-6


def test_vibrato_survives_correction(detuned, tmp_path) -> None:
    truth = detuned["truth"]
    vib = [o for o in truth["ornaments"] if o["type"] == "vibrato" and o["end_s"] - o["start_s"] > 0.6]
    assert vib, "the scenario should hold long vibrato notes"
    out = tmp_path / "fixed.wav"
    assert main(["correct", str(detuned["take"]), "-o", str(out), "--key", truth["key"]["name"], "-q"]) == 0

    def extent(audio: np.ndarray, o: dict) -> float:
        track = DspPitchTracker().track(audio, sr=SR)
        a, b = int((o["start_s"] + 0.15) / track.hop_s), int((o["end_s"] - 0.1) / track.hop_s)
        m = hz_to_midi(track.hz[a:b])
        m = m[np.isfinite(m)]
        # peak-to-peak swing of the detrended curve: 2·√2·RMS for a sine
        m = m - np.convolve(m, np.ones(41) / 41, mode="same")
        return float(2 * np.sqrt(2) * np.sqrt(np.mean(m[20:-20] ** 2)) * 100)

    original, _ = audio_io.load_audio(detuned["take"], mono=True)
    fixed, _ = audio_io.load_audio(out, mono=True)
    kept = [extent(fixed, o) / extent(original, o) for o in vib]
    assert 0.85 <= np.median(kept) <= 1.15


def test_melody_reference_and_bad_key(detuned, tmp_path, capsys) -> None:
    report_path = tmp_path / "r.json"
    assert main(["correct", str(detuned["take"]), "-o", str(tmp_path / "m.wav"), "--melody", str(detuned["melody"]),
                 "--report", str(report_path), "-q"]) == 0
    report = json.loads(report_path.read_text())
    assert report["pitch"]["target"] == "melody"
    targets = [n["target_midi"] for n in report["pitch"]["notes"] if n["target_midi"] is not None]
    truth_targets = {n["target_midi"] for n in detuned["truth"]["notes"]}
    assert np.mean([t in truth_targets for t in targets]) > 0.9
    code = main(["correct", str(detuned["take"]), "-o", str(tmp_path / "k.wav"), "--key", "H flat lydian"])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code and "H flat lydian" in err
    assert not (tmp_path / "k.wav").exists()


def test_plan_without_backing_renders_the_vocal_alone(detuned, tmp_path, capsys) -> None:
    plan = tmp_path / "plan.json"
    assert main(["analyze", str(detuned["take"]), "-o", str(plan), "--key", detuned["truth"]["key"]["name"], "-q"]) == 0
    record = json.loads(plan.read_text())
    assert record["inputs"]["backing"] is None and record["alignment"]["method"] == "none"
    assert record["pitch"]["notes"]
    out, rep = tmp_path / "vocal.wav", tmp_path / "r.json"
    assert main(["render", str(plan), "-o", str(out), "--report", str(rep), "-q"]) == 0
    report = json.loads(rep.read_text())
    assert report["balance"] is None and any("no backing" in w for w in report["warnings"])
    assert report["loudness"]["integrated_lufs"] == pytest.approx(-14.0, abs=0.5)
    # re-render with a tighter tuning reuses the analysis and changes the correction
    assert (
        main(
            ["render", str(plan), "-o", str(tmp_path / "tight.wav"), "--tuning", "1", "--report", str(tmp_path / "t.json"), "-q"]
        )
        == 0
    )
    assert json.loads((tmp_path / "t.json").read_text())["settings"]["correction"] == 1.0


def test_sliders_map_to_correction_settings() -> None:
    assert correction_from_sliders({}).correction == pytest.approx(0.8)
    assert correction_from_sliders({"tuning": -1}).correction == 0.0
    assert correction_from_sliders({"tuning": 1}).correction == 1.0
    assert correction_from_sliders({"ornaments": 1}).policy_scales()["vibrato"] == pytest.approx(0.5)
    assert correction_from_sliders({"ornaments": -1}).policy_scales()["vibrato"] == 1.0
    assert correction_from_sliders({"tuning": 1}, correction=0.3).correction == 0.3
    with pytest.raises(ConfigError):
        correction_from_sliders({}, correction=1.5)


def test_per_type_ornament_policy_from_the_cli(detuned, tmp_path, capsys) -> None:
    report_path = tmp_path / "r.json"
    assert (
        main(
            [
                "correct",
                str(detuned["take"]),
                "-o",
                str(tmp_path / "p.wav"),
                "--ornaments",
                "vibrato=flatten,slide=keep",
                "--report",
                str(report_path),
                "-q",
            ]
        )
        == 0
    )
    settings = json.loads(report_path.read_text())["pitch"]["settings"]
    assert settings["ornaments"] == {"vibrato": "flatten", "slide": "keep"}
    code = main(["correct", str(detuned["take"]), "-o", str(tmp_path / "q.wav"), "--ornaments", "wobble=keep"])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code and "wobble" in err
    with pytest.raises(SystemExit):
        main(["correct", str(detuned["take"]), "-o", str(tmp_path / "q.wav"), "--ornaments", "vibrato=loud"])


def test_on_device_models_run_through_the_cli(detuned, tmp_path) -> None:
    report_path = tmp_path / "r.json"
    assert (
        main(
            [
                "correct",
                str(detuned["take"]),
                "-o",
                str(tmp_path / "m.wav"),
                "--tracker",
                "model",
                "--key",
                detuned["truth"]["key"]["name"],
                "--report",
                str(report_path),
                "-q",
            ]
        )
        == 0
    )
    pitch = json.loads(report_path.read_text())["pitch"]
    assert pitch["tracker"] == "tflite-pitch" and pitch["detector"] == "tflite-ornaments"
    assert len(pitch["notes"]) >= 0.6 * len(detuned["truth"]["notes"])
    assert pitch["median_abs_cents_error_after"] < 10.0


def test_preview_window_is_corrected_like_the_full_render(detuned, tmp_path) -> None:
    plan = tmp_path / "plan.json"
    assert main(["analyze", str(detuned["take"]), "-o", str(plan), "--key", detuned["truth"]["key"]["name"], "-q"]) == 0
    assert main(["render", str(plan), "-o", str(tmp_path / "full.wav"), "--reverb", "-1", "-q"]) == 0
    assert (
        main(["render", str(plan), "-o", str(tmp_path / "window.wav"), "--reverb", "-1", "--start", "4", "--duration", "5", "-q"])
        == 0
    )
    full, _ = audio_io.load_audio(tmp_path / "full.wav", mono=True)
    window, _ = audio_io.load_audio(tmp_path / "window.wav", mono=True)
    assert abs(len(window) - 5 * SR) < 10
    tracker = DspPitchTracker()
    a = tracker.track(full[4 * SR : 9 * SR], sr=SR).hz
    b = tracker.track(window, sr=SR).hz
    both = (a > 0) & (b > 0)
    assert both.mean() > 0.3
    assert np.median(np.abs(1200 * np.log2(a[both] / b[both]))) < 3.0
