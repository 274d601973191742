"""The melisma command end to end: one-tap mix, analyze once / render many, and bad input.

Takes come from the synthetic corpus (tools/corpus) with known latency, bleed, noise and hum.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io
from melisma.analysis.loudness import integrated_lufs
from melisma.cli import main
from melisma.errors import AudioContentError, DecodeError, OutputExistsError
from melisma.semantic import STYLE_PRESETS

from tools.corpus.scenarios import make_scenario

SR = 48000


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> dict:
    """A 12 s phone take with speaker bleed, 230 ms late, noisy and humming, over its backing."""
    folder = tmp_path_factory.mktemp("song")
    sc = make_scenario(seed=7, duration_s=12.0, sr=SR, offset_ms=230.0, bleed_db=-14.0, snr_db=18.0, hum_hz=50, aac_kbps=64)
    take, backing = folder / "take.m4a", folder / "backing.m4a"
    audio_io.write_audio(take, sc.take, sr=SR, bit_rate=64000)
    audio_io.write_audio(backing, sc.backing, sr=SR, bit_rate=128000)
    return {"dir": folder, "take": take, "backing": backing, "truth": sc.truth}


def run_cli(*argv: str, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_one_tap_mix_meets_the_brief(song, tmp_path, capsys) -> None:
    out, report_path, stems, plot = tmp_path / "mix.m4a", tmp_path / "r.json", tmp_path / "stems", tmp_path / "mix.png"
    code, stdout, stderr = run_cli("mix", song["take"], song["backing"], "-o", out, "--style", "western",
                                   "--report", report_path, "--stems", stems, "--plot", plot, capsys=capsys)
    assert code == 0, stderr
    report = json.loads(report_path.read_text())
    assert report["alignment"]["method"] == "bleed"
    assert abs(report["alignment"]["offset_ms"] - song["truth"]["offset_ms"]) <= 5.0
    assert report["alignment"]["confidence"] > 0.5
    # master: loudness and true peak, measured independently on the decoded file
    mix, sr = audio_io.load_audio(out)
    assert abs(integrated_lufs(mix, sr=sr) - (-14.0)) <= 0.6  # AAC round trip adds a little
    assert report["loudness"]["integrated_lufs"] == pytest.approx(-14.0, abs=0.5)
    assert report["loudness"]["true_peak_dbtp"] <= -1.0
    # balance against the preset
    target = STYLE_PRESETS["western"]["vocal_to_backing_lu"]
    assert report["balance"]["target_lu"] == pytest.approx(target)
    vocal, _ = audio_io.load_audio(stems / "vocal.wav")
    backing, _ = audio_io.load_audio(stems / "backing.wav")
    measured = integrated_lufs(vocal, sr=SR) - integrated_lufs(backing, sr=SR)
    assert abs(measured - target) <= 1.0
    assert abs(mix.shape[1] / sr - song["truth"].get("backing_duration_s", backing.shape[1] / SR)) < 0.2
    assert any(a.get("action") == "hum_notch" for a in report["cleanup"]["actions"])
    assert set(report["timings_s"]["analysis"]) >= {"decode", "align", "cleanup"}
    assert plot.stat().st_size > 10_000
    assert "LUFS" in stdout


def test_analyze_once_render_many_without_the_inputs(song, tmp_path, capsys) -> None:
    take = tmp_path / "take.m4a"
    take.write_bytes(song["take"].read_bytes())
    plan = tmp_path / "plan.json"
    assert run_cli("analyze", take, song["backing"], "-o", plan, "-q", capsys=capsys)[0] == 0
    take.unlink()  # rendering must not need the take again
    dry, wet = tmp_path / "dry.wav", tmp_path / "wet.wav"
    assert run_cli("render", plan, "-o", dry, "--reverb", "-1", "--report", tmp_path / "dry.json", "-q", capsys=capsys)[0] == 0
    assert run_cli("render", plan, "-o", wet, "--reverb", "1", "--report", tmp_path / "wet.json", "-q", capsys=capsys)[0] == 0
    a, _ = audio_io.load_audio(dry)
    b, _ = audio_io.load_audio(wet)
    assert a.shape == b.shape and not np.allclose(a, b)
    wet_report = json.loads((tmp_path / "wet.json").read_text())
    assert wet_report["settings"]["sliders"]["reverb"] == 1.0
    assert "decode" not in wet_report["timings_s"].get("render", {})
    preview = tmp_path / "preview.wav"
    assert run_cli("render", plan, "-o", preview, "--start", "3", "--duration", "4", "-q", capsys=capsys)[0] == 0
    p, _ = audio_io.load_audio(preview)
    assert abs(p.shape[1] - 4 * SR) < 10


def test_headphone_take_uses_the_calibrated_latency(tmp_path, capsys) -> None:
    sc = make_scenario(seed=3, duration_s=8.0, sr=SR, offset_ms=140.0, bleed_db=None, snr_db=25.0)
    take, backing = tmp_path / "t.wav", tmp_path / "b.wav"
    audio_io.write_audio(take, sc.take, sr=SR)
    audio_io.write_audio(backing, sc.backing, sr=SR)
    code, _, err = run_cli("mix", take, backing, "-o", tmp_path / "m.wav", "--latency-ms", "140",
                           "--report", tmp_path / "r.json", "-q", capsys=capsys)
    assert code == 0, err
    al = json.loads((tmp_path / "r.json").read_text())["alignment"]
    assert al["method"].startswith("calibrated")
    assert abs(al["offset_ms"] - 140.0) <= 5.0


# ---------------------------------------------------------------------------------------------
# Bad input: a clear one-line message, a non-zero exit, nothing written, nothing overwritten


def _silent(path: Path) -> None:
    audio_io.write_audio(path, np.zeros(SR * 3, np.float32), sr=SR)


def _nan(path: Path) -> None:
    import scipy.io.wavfile

    y = (0.1 * np.sin(np.arange(SR * 3) / 10)).astype(np.float32)
    y[SR] = np.nan
    scipy.io.wavfile.write(path, SR, y)


def _two_hours(path: Path) -> None:
    # A real two-hour 8 kHz mono 16-bit WAV (115 MB of zeros, written sparsely).
    n = 2 * 3600 * 8000
    header = b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    header += b"data" + struct.pack("<I", 2 * n)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 2 * n)


BAD_TAKES = {
    "missing.m4a": (None, "no such file", DecodeError.exit_code),
    "empty.m4a": (lambda p: p.write_bytes(b""), "empty", DecodeError.exit_code),
    "corrupt.m4a": (lambda p: p.write_bytes(os.urandom(50_000)), "corrupt|not an audio", DecodeError.exit_code),
    "lyrics.m4a": (lambda p: p.write_text("la la la\n" * 500), "corrupt|not an audio|cannot", DecodeError.exit_code),
    "silent.wav": (_silent, "silent", AudioContentError.exit_code),
    "nan.wav": (_nan, "NaN", AudioContentError.exit_code),
    "two_hours.wav": (_two_hours, "min", AudioContentError.exit_code),
}


@pytest.mark.parametrize("name", sorted(BAD_TAKES))
def test_bad_take_fails_cleanly(name, song, tmp_path, capsys) -> None:
    make, message, exit_code = BAD_TAKES[name]
    take = tmp_path / name
    if make:
        make(take)
    out = tmp_path / "mix.m4a"
    code, _stdout, stderr = run_cli("mix", take, song["backing"], "-o", out, "--report", tmp_path / "r.json",
                                   "--stems", tmp_path / "stems", capsys=capsys)
    assert code == exit_code
    assert stderr.startswith("melisma: error:") and "Traceback" not in stderr
    import re

    assert re.search(message, stderr), stderr
    assert str(take.name) in stderr
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != name)
    assert leftovers == [], leftovers


def test_truncated_upload_fails_cleanly(song, tmp_path, capsys) -> None:
    data = song["take"].read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 2])
    code, _, stderr = run_cli("mix", cut, song["backing"], "-o", tmp_path / "mix.wav", capsys=capsys)
    assert code == DecodeError.exit_code and "cut.m4a" in stderr
    assert not (tmp_path / "mix.wav").exists()


def test_existing_output_is_never_overwritten_without_force(song, tmp_path, capsys) -> None:
    out = tmp_path / "mix.wav"
    out.write_bytes(b"my previous mix")
    code, _, stderr = run_cli("mix", song["take"], song["backing"], "-o", out, capsys=capsys)
    assert code == OutputExistsError.exit_code and "--force" in stderr
    assert out.read_bytes() == b"my previous mix"
    assert run_cli("mix", song["take"], song["backing"], "-o", out, "--force", "-q", capsys=capsys)[0] == 0
    assert audio_io.probe(out).sr == SR


def test_bad_options_name_the_value(song, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["mix", str(song["take"]), str(song["backing"]), "-o", str(tmp_path / "m.wav"), "--warmth", "3"])
    assert exc.value.code == 2
    assert "3 is outside" in capsys.readouterr().err
    code, _, stderr = run_cli("mix", song["take"], song["backing"], "-o", tmp_path / "m.xyz", capsys=capsys)
    assert code != 0 and ".xyz" in stderr
    code, _, stderr = run_cli("mix", song["take"], song["backing"], "-o", tmp_path / "m.wav", "--target-lufs", "3", capsys=capsys)
    assert code == 2 and "target_lufs=3" in stderr
    code, _, stderr = run_cli("render", tmp_path / "nope.json", "-o", tmp_path / "m.wav", capsys=capsys)
    assert code != 0 and "nope.json" in stderr
    (tmp_path / "junk.json").write_text("{not json")
    code, _, stderr = run_cli("render", tmp_path / "junk.json", "-o", tmp_path / "m.wav", capsys=capsys)
    assert code != 0 and "not a Melisma plan" in stderr
    assert not (tmp_path / "m.wav").exists()


def test_unusual_but_valid_inputs_are_mixed_with_warnings(tmp_path, capsys) -> None:
    import scipy.io.wavfile

    sc = make_scenario(seed=11, duration_s=8.0, sr=SR, offset_ms=90.0, bleed_db=-12.0, snr_db=20.0)
    # 8 kHz mono take, much shorter than the backing; 192 kHz 8-channel backing twice as long
    take8k = audio_io.resample(sc.take[: SR * 3], orig_sr=SR, target_sr=8000)
    scipy.io.wavfile.write(tmp_path / "take8k.wav", 8000, take8k)
    back = audio_io.resample(np.concatenate([sc.backing, sc.backing], axis=1), orig_sr=SR, target_sr=192000)
    eight = np.concatenate([back, back, back, back], axis=0).T * 0.5
    scipy.io.wavfile.write(tmp_path / "backing8ch.wav", 192000, np.ascontiguousarray(eight, dtype=np.float32))
    # 3 s at 8 kHz carry too little bleed to measure the offset (it was mixed at 0 ms before issue
    # 13; now that is refused by default): this test is about the formats, so accept the guess.
    code, _, err = run_cli("mix", tmp_path / "take8k.wav", tmp_path / "backing8ch.wav", "-o", tmp_path / "m.flac",
                           "--report", tmp_path / "r.json", "-q", "--accept-alignment-guess", capsys=capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    text = " ".join(report["warnings"])
    assert "8000 Hz" in text and "8 channels" in text and "covers only" in text
    assert audio_io.probe(tmp_path / "m.flac").channels == 2


def test_console_script_prints_no_traceback(tmp_path) -> None:
    exe = Path(sys.executable).with_name("melisma")
    if not exe.exists():
        pytest.skip("melisma console script not installed in this environment")
    proc = subprocess.run([str(exe), "mix", str(tmp_path / "a.m4a"), str(tmp_path / "b.m4a"), "-o", str(tmp_path / "m.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == DecodeError.exit_code
    assert "Traceback" not in proc.stderr and "a.m4a" in proc.stderr


def test_demo_runs_twice_and_spares_other_folders(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-q"]) == 0
    first = json.loads((out / "report.json").read_text())
    assert first["alignment"]["method"] == "bleed" and abs(first["alignment"]["offset_ms"] - 180.0) <= 5.0
    assert any(a["action"] == "hum_notch" for a in first["cleanup"]["actions"])
    assert (out / "mix.png").stat().st_size > 10_000 and (out / "stems" / "vocal.wav").exists()
    assert main(["demo", "-o", str(out), "-q"]) == 0  # the README's main command works again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "song.wav").write_bytes(b"keep me")
    assert main(["demo", "-o", str(mine)]) == 2
    assert "not made by `melisma demo`" in capsys.readouterr().err
    assert (mine / "song.wav").read_bytes() == b"keep me" and not (mine / "mix.m4a").exists()
