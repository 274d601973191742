"""The loudness of the written file: in every format it lands within ±0.5 LU of the target with its
true peak under −1 dBTP, and the file's own figures are what the report and the summary say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from melisma import audio_io, pipeline
from melisma.cli import _summary
from melisma.pipeline.outputs import CEILING_DBTP, check_encoded_file, measure_file
from melisma.render.master import master

from tools.corpus.scenarios import make_scenario, write_scenario

SR = 48000
FORMATS = (".wav", ".flac", ".m4a", ".mp3", ".ogg")


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loud")
    sc = make_scenario(seed=21, duration_s=6.0, sr=SR, offset_ms=90.0, bleed_db=-16.0, snr_db=24.0, backing_renderer="numpy")
    paths = write_scenario(sc, folder, take_format="wav", backing_format="wav")
    plan = folder / "plan.json"
    pipeline.analyze_files(paths["take"], paths["backing"], plan, style="cpop")
    return plan


def _independent_lufs(path: Path) -> float:
    y, sr = audio_io.load_audio(path)
    return float(pyloudnorm.Meter(sr).integrated_loudness(y.T.astype(np.float64)))


@pytest.mark.parametrize("target", [-14.0, -11.0])
@pytest.mark.parametrize("in_memory", [False, True], ids=["straight-to-file", "with-stems"])
@pytest.mark.parametrize("ext", FORMATS)
def test_the_written_file_is_on_target_and_the_report_says_so(plan_path: Path, tmp_path: Path, ext: str,
                                                               in_memory: bool, target: float) -> None:
    out = tmp_path / f"mix{ext}"
    report = pipeline.render_plan(plan_path, out, target_lufs=target, stems_dir=tmp_path / "stems" if in_memory else None)
    tp, lufs = measure_file(out)
    assert abs(lufs - target) <= 0.5, f"{ext}: the file is {lufs:.2f} LUFS"
    assert abs(_independent_lufs(out) - target) <= 0.5
    assert tp <= CEILING_DBTP + 1e-3
    loud = report["loudness"]
    # the headline is the file's own measurement (a lossless file holds the master's samples)
    assert loud["integrated_lufs"] == pytest.approx(lufs, abs=0.01)
    assert loud["true_peak_dbtp"] == pytest.approx(tp, abs=0.02)
    assert loud["measured"] == ("file" if ext in pipeline.LOSSY_EXTENSIONS else "master")
    assert loud["target_lufs"] == target and loud["ceiling_dbtp"] == CEILING_DBTP
    assert f"{lufs:.1f} LUFS" in _summary(report, str(out))


def _hot_mix(seconds: float = 4.0) -> np.ndarray:
    """Square-wave bass and noise bursts: a mix whose sharp edges make lossy encoders overshoot."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(3)
    square = 0.4 * np.sign(np.sin(2 * np.pi * 55 * t))
    bursts = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0.7) * 0.3
    y = (square + bursts).astype(np.float32)
    return np.stack([y, np.roll(y, 7)])


@pytest.mark.parametrize("ext", [".m4a", ".mp3", ".ogg"])
def test_an_encoder_overshoot_is_fixed_at_the_level_not_by_turning_the_file_down(tmp_path: Path, ext: str) -> None:
    pre = _hot_mix()
    target = -9.0
    path = tmp_path / f"hot{ext}"
    calls: list[tuple[float, float]] = []

    def remaster(aim: float, ceiling: float) -> dict:
        calls.append((aim, ceiling))
        mastered, report = master(pre, sr=SR, target_lufs=aim, ceiling_dbtp=ceiling)
        audio_io.encode_audio(path, mastered, sr=SR)
        return report

    first = remaster(target, -0.1)  # as if the master had left the codec no headroom at all
    tp0, lufs0 = measure_file(path)
    assert tp0 > CEILING_DBTP  # the codec did overshoot: there is something to fix
    check = check_encoded_file(path, target_lufs=target, master_report=first, remaster=remaster)
    tp, lufs = measure_file(path)
    assert check["reencodes"] >= 1 and check["warning"] is None
    assert tp <= CEILING_DBTP and abs(lufs - target) <= 0.5
    assert check["file_true_peak_dbtp"] == pytest.approx(tp, abs=1e-3)
    assert check["file_integrated_lufs"] == pytest.approx(lufs, abs=1e-3)
    assert calls[-1][1] < -0.1  # the limiter's ceiling came down, the loudness aim did not
    trimmed = lufs0 - (tp0 - CEILING_DBTP + 0.1)  # what turning the file down would have given
    assert lufs > trimmed + 0.2 or tp0 - CEILING_DBTP < 0.2


def test_when_the_limiter_cannot_make_room_the_level_comes_down_with_a_warning(tmp_path: Path) -> None:
    pre = _hot_mix()
    path = tmp_path / "hot.m4a"

    def remaster(aim: float, ceiling: float) -> dict:
        # a master allowed only 1 LU of limiting: the real RenderError when asked for more
        mastered, report = master(pre, sr=SR, target_lufs=aim, ceiling_dbtp=ceiling, max_limiting_lu=1.0)
        audio_io.encode_audio(path, mastered, sr=SR)
        return report

    first = remaster(-9.0, -0.1)
    check = check_encoded_file(path, target_lufs=-9.0, master_report=first, remaster=remaster)
    assert check["warning"] and "no room" in check["warning"]
    tp, lufs = measure_file(path)
    assert check["file_integrated_lufs"] == pytest.approx(lufs, abs=1e-3) and lufs < -9.5
    assert tp <= CEILING_DBTP


def _tame_mix(seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 331 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return np.stack([y, y]).astype(np.float32)


def test_a_file_already_on_target_is_not_encoded_again(tmp_path: Path) -> None:
    path = tmp_path / "ok.m4a"
    mastered, first = master(_tame_mix(), sr=SR, target_lufs=-16.0, ceiling_dbtp=-2.0)
    audio_io.encode_audio(path, mastered, sr=SR)
    before = path.read_bytes()

    def remaster(aim: float, ceiling: float) -> dict:
        raise AssertionError("no second pass was needed")

    check = check_encoded_file(path, target_lufs=-16.0, master_report=first, remaster=remaster)
    assert check["reencodes"] == 0 and path.read_bytes() == before
    assert check["file_integrated_lufs"] == pytest.approx(-16.0, abs=0.1)
