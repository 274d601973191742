"""The report a singer and an engineer can read: headline facts first, no per-frame arrays (unless
asked for), the keys the app reads still there, and a picture in the units it claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from melisma import pipeline
from melisma.analysis.loudness import integrated_lufs
from melisma.cli import main
from melisma.report_headline import SINGER_ORNAMENTS, finish_report, headline, note_name
from melisma.report_plot import level_matched, loudness_curve, pitch_labels, smoothed_spectrum_db
from melisma_companion.app import words

from tools.corpus.scenarios import make_scenario, write_scenario

SR = 48000


def _inputs(folder: Path, **kwargs) -> tuple[Path, Path]:
    sc = make_scenario(duration_s=7.0, sr=SR, backing_renderer="numpy", **kwargs)
    paths = write_scenario(sc, folder, take_format="wav", backing_format="wav")
    return Path(paths["take"]), Path(paths["backing"])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("report")
    take, backing = _inputs(folder, seed=31, offset_ms=120.0, bleed_db=-14.0, snr_db=20.0, hum_hz=50.0)
    plan = folder / "plan.json"
    pipeline.analyze_files(take, backing, plan, style="cpop")
    out = folder / "mix.wav"
    pipeline.render_plan(plan, out, report_path=folder / "mix.report.json", plot_path=folder / "mix.png")
    pipeline.render_plan(plan, folder / "frames.wav", report_path=folder / "frames.report.json", report_frames=True)
    return {"folder": folder, "plan": plan, "report": json.loads((folder / "mix.report.json").read_text(encoding="utf-8")),
            "frames": json.loads((folder / "frames.report.json").read_text(encoding="utf-8"))}


def test_the_report_opens_with_the_headline_facts(mixed) -> None:
    report = mixed["report"]
    assert list(report)[:3] == ["format", "version", "headline"]
    head = report["headline"]
    assert head["alignment"]["aligned"] and head["alignment"]["method"] == "bleed"
    assert head["alignment"]["offset_ms"] == pytest.approx(report["alignment"]["offset_ms"], abs=0.1)
    assert {c["what"] for c in head["cleaned"]} >= {"mains hum", "low rumble"}
    hum = next(c for c in head["cleaned"] if c["what"] == "mains hum")
    assert hum["hz"] == pytest.approx(50.0, abs=0.5)
    notes = head["notes"]
    shifts = [abs(c["shift_cents"]) for c in report["pitch"]["corrections"] if abs(c["shift_cents"]) >= 5.0]
    assert notes["count"] == len(report["pitch"]["notes"]) and notes["moved"] == len(shifts)
    assert notes["max_moved_cents"] == pytest.approx(max(shifts, default=0.0), abs=0.1)
    assert set(head["ornaments_kept"]) <= {"vibrato", "slide", "grace note", "trill"}
    singer = [SINGER_ORNAMENTS[o["type"]] for o in report["pitch"]["ornaments"] if o["type"] in SINGER_ORNAMENTS]
    assert sum(head["ornaments_kept"].values()) == len(singer)
    assert head["loudness"]["integrated_lufs"] == report["loudness"]["integrated_lufs"]
    assert head["lines"][0].startswith("Lined up: the take was")
    assert any(line.startswith("Loudness:") for line in head["lines"])


def test_frames_stay_in_the_plan_unless_asked_for(mixed) -> None:
    report, frames = mixed["report"], mixed["frames"]
    assert "f0" not in report["pitch"] and "target_f0" not in report["pitch"]
    assert "in the plan" in report["pitch"]["frames"]
    assert len(frames["pitch"]["target_f0"]["hz"]) == len(frames["pitch"]["f0"]["hz"]) > 100
    plan = json.loads(mixed["plan"].read_text(encoding="utf-8"))
    assert len(plan["pitch"]["f0"]["hz"]) == len(frames["pitch"]["f0"]["hz"])
    assert len(json.dumps(report)) < 0.6 * len(json.dumps(frames))


def test_the_keys_the_app_reads_are_still_there(mixed) -> None:
    report = mixed["report"]
    lines = words.plan_summary(report)
    assert any("late" in line for line in lines) and any("LUFS" in line for line in lines)
    # the bleed the clean-up removed is said in words, whether it was found or not
    bleed = next(a for a in report["cleanup"]["actions"] if a["action"] == "bleed_removal")
    said = any("speaker played into the mic" in line for line in lines)
    assert said == bool(bleed["detected"])
    for n in report["pitch"]["notes"]:
        assert {"start_s", "end_s", "midi", "target_midi", "cents_error"} <= set(n)
    for o in report["pitch"]["ornaments"]:
        assert {"type", "start_s", "end_s", "note"} <= set(o)
    assert {"offset_ms", "method", "confidence"} <= set(report["alignment"])
    assert report["cleanup"]["actions"] and report["pitch"]["key"]["name"]


def test_a_guessed_alignment_does_not_read_as_success(tmp_path: Path, capsys) -> None:
    take, backing = _inputs(tmp_path, seed=32, offset_ms=150.0, bleed_db=None, snr_db=30.0)
    report_path = tmp_path / "r.json"
    assert main(["mix", str(take), str(backing), "-o", str(tmp_path / "mix.wav"), "--report", str(report_path),
                 "--accept-alignment-guess", "-q"]) == 0
    head = json.loads(report_path.read_text(encoding="utf-8"))["headline"]
    assert head["alignment"]["aligned"] is False and head["alignment"]["uncertain"] and head["alignment"]["reason"]
    assert head["alignment"]["method"] == "guess"
    assert head["lines"][0].startswith("NOT measured")


def test_unaligned_and_vocal_only_headlines() -> None:
    none = headline({"alignment": {"offset_ms": 0.0, "method": "none", "confidence": 0.0,
                                   "details": {"reason": "no bleed found and no latency given"}}})
    assert none["alignment"]["aligned"] is False and none["lines"][0].startswith("NOT lined up")
    alone = headline({"alignment": {"offset_ms": 0.0, "method": "none", "confidence": 0.0,
                                    "details": {"reason": "no backing track given"}}})
    assert alone["lines"][0] == "No backing track: nothing to line up."
    weak = headline({"alignment": {"offset_ms": 40.0, "method": "bleed", "confidence": 0.2}})
    assert weak["alignment"]["uncertain"] and "uncertain" in weak["lines"][0]


def test_the_cli_summary_is_the_headline(mixed, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again.wav"
    assert main(["render", str(mixed["plan"]), "-o", str(out), "--report", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    head = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["headline"]
    for line in head["lines"]:
        assert line in printed


def test_softened_ornaments_are_counted_apart() -> None:
    report = {"pitch": {"notes": [{"midi": 60.0, "target_midi": 60.0, "start_s": 0.0, "end_s": 1.0}],
                        "ornaments": [{"type": "vibrato", "note": 0}, {"type": "mordent", "note": 0},
                                      {"type": "drift", "note": 0}],
                        "corrections": [{"note": 0, "shift_cents": 0.0,
                                         "ornaments": [{"type": "vibrato", "residual_scale": 0.5},
                                                       {"type": "mordent", "residual_scale": 1.0}]}]}}
    head = headline(report)
    assert head["ornaments_kept"] == {"trill": 1} and head["ornaments_softened"] == {"vibrato": 1}
    assert "drift" not in json.dumps(head)
    assert head["notes"]["moved"] == 0 and "already in tune" in " ".join(head["lines"])


def test_finish_report_keeps_frames_on_request() -> None:
    report = {"format": "melisma-report", "version": 1, "pitch": {"f0": {"hop_s": 0.01, "hz": [0.0]}, "notes": []}}
    finish_report(report, frames=True)
    assert report["pitch"]["f0"]["hz"] == [0.0] and list(report)[2] == "headline"


def test_note_names_and_cents_moved_per_note() -> None:
    assert [note_name(m) for m in (60, 61, 69, 71.4, 47.6)] == ["C4", "C#4", "A4", "B4", "C3"]
    labels = pitch_labels({"notes": [{"start_s": 0.0, "end_s": 1.0, "midi": 61.3, "target_midi": 61.0},
                                     {"start_s": 1.0, "end_s": 2.0, "midi": 64.0, "target_midi": 64.0}],
                           "corrections": [{"note": 0, "shift_cents": -27.6}, {"note": 1, "shift_cents": 0.1}]})
    assert [t for _, _, t in labels] == ["C#4 −28¢", "E4"]


def test_spectra_are_level_matched_so_only_the_tone_change_shows() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(4 * SR).astype(np.float32)
    centres, before = smoothed_spectrum_db(noise, SR)
    _, louder = smoothed_spectrum_db(4.0 * noise, SR)  # +12 dB, same tone
    matched, shift = level_matched(before, louder, centres)
    assert shift == pytest.approx(-12.04, abs=0.1)
    assert np.nanmax(np.abs(matched - before)) < 0.01
    from scipy.signal import butter, sosfilt

    bright = noise + sosfilt(butter(2, 4000, "highpass", fs=SR, output="sos"), noise).astype(np.float32)
    _, after = smoothed_spectrum_db(bright, SR)
    matched, _ = level_matched(before, after, centres)
    lo, hi = (centres > 200) & (centres < 1000), (centres > 8000) & (centres < 16000)
    assert np.nanmean(matched[hi] - before[hi]) - np.nanmean(matched[lo] - before[lo]) > 4.0


def test_the_picture_is_drawn(mixed) -> None:
    picture = mixed["folder"] / "mix.png"
    assert picture.stat().st_size > 20_000


def test_the_loudness_panel_is_in_lufs_not_rms() -> None:
    rng = np.random.default_rng(1)
    y = (0.1 * rng.standard_normal((2, 8 * SR))).astype(np.float32)
    t, lufs = loudness_curve(y, SR)
    assert t[0] == pytest.approx(3.0) and t[-1] == pytest.approx(8.0, abs=0.11)
    assert np.allclose(lufs, integrated_lufs(y, sr=SR), atol=0.2)  # steady noise: short-term = integrated
    rms_db = 10 * np.log10(np.mean(y.mean(axis=0) ** 2))
    assert abs(float(np.median(lufs)) - rms_db) > 1.0  # what the old panel drew is not loudness


def test_picture_shows_the_pauses_before_and_after_the_clean_up(mixed, tmp_path):
    from melisma.report_plot import pause_bars, plot_report

    report = mixed["report"]
    actions = report["cleanup"]["actions"]
    bleed = next(a for a in actions if a["action"] == "bleed_removal")
    levels = next(a for a in actions if a["action"] == "pause_levels")
    # the take had bleed (-14 dB) and noise (20 dB SNR): bleed removal made the singer's pauses
    # clearly quieter and the rest of the clean-up did not make them louder (what is left there is
    # the bleed's residue, above the gate's threshold, which the noise profile does not hold)
    assert bleed["pauses_after_dbfs"] < bleed["pauses_before_dbfs"] - 6
    assert levels["pauses_after_dbfs"] <= levels["pauses_before_dbfs"] + 0.5
    bars = pause_bars(report["cleanup"])
    assert [b[0] for b in bars] == ["raw take", "bleed removed", "cleaned"]
    assert bars[0][1] > bars[1][1] and bars[2][1] < bars[0][1] - 3
    assert any("the pauses went from" in line for line in report["headline"]["lines"])
    sr = 48000
    t = np.arange(2 * sr) / sr
    vocal = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    pitch = {"f0": {"hz": [220.0] * 200, "hop_s": 0.01}, "notes": [{"start_s": 0.0, "end_s": 2.0, "midi": 57.0}],
             "ornaments": [{"type": "vibrato", "start_s": 0.2, "end_s": 1.0}, {"type": "slide_in", "start_s": 0.0, "end_s": 0.2}]}
    titles = plot_report(tmp_path / "p.png", {**report, "pitch": pitch}, mix=np.stack([vocal, vocal]),
                         stems={"vocal": np.stack([vocal, vocal]), "backing": np.stack([vocal, vocal])}, sr=sr, vocal_dry=vocal)
    assert "bleed and noise in the singer's pauses" in titles
    assert any(t.startswith("pitch") for t in titles) and (tmp_path / "p.png").stat().st_size > 10_000
    empty = plot_report(tmp_path / "q.png", {"settings": {"style": "cpop"}}, mix=np.stack([vocal, vocal]),
                        stems={"vocal": vocal, "backing": vocal}, sr=sr)
    assert "bleed and noise in the singer's pauses" in empty and pause_bars({}) == []
