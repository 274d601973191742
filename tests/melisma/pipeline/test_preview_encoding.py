"""The box's preview: a window mastered straight into a low-rate Opus file (no WAV in between),
as loud as the same window rendered losslessly, and the box's job path uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io, pipeline
from melisma.analysis.loudness import integrated_lufs
from melisma.device.engine_adapter import PREVIEW_BIT_RATE, PREVIEW_CODEC_OPTIONS, PipelineEngine
from melisma.errors import OutputExistsError

from tools.corpus import make_scenario
from tools.corpus.scenarios import write_scenario


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("preview")
    sc = make_scenario(seed=23, duration_s=8.0, backing_renderer="numpy", offset_ms=60.0, bleed_db=-16.0, snr_db=25.0)
    paths = write_scenario(sc, folder / "in", take_format="wav", backing_format="wav")
    plan = folder / "plan.json"
    pipeline.analyze_files(paths["take"], paths["backing"], plan, style="cpop")
    return plan


def test_preview_goes_straight_into_opus_as_loud_as_the_lossless_window(plan_path, tmp_path):
    wav = pipeline.render_plan(plan_path, tmp_path / "window.wav", sliders={"warmth": 0.4}, start_s=2.0, duration_s=4.0)
    report = pipeline.render_preview(plan_path, tmp_path / "window.ogg", sliders={"warmth": 0.4}, start_s=2.0,
                                     duration_s=4.0, bit_rate=PREVIEW_BIT_RATE, codec_options=PREVIEW_CODEC_OPTIONS)
    # the same master as the lossless window (same ceiling, same gain), not the lossy path's file check
    assert report["master"] == wav["master"]
    assert report["window"] == {"start_s": 2.0, "duration_s": 4.0}
    assert "file_integrated_lufs" not in report["loudness"]
    ref, _ = audio_io.load_audio(tmp_path / "window.wav")
    got, sr = audio_io.load_audio(tmp_path / "window.ogg")
    assert sr == 48000 and got.shape == ref.shape
    assert abs(integrated_lufs(got, sr=sr) - integrated_lufs(ref, sr=sr)) < 0.5
    assert not list(tmp_path.glob(".*"))  # nothing staged left behind
    with pytest.raises(OutputExistsError):
        pipeline.render_preview(plan_path, tmp_path / "window.ogg", start_s=2.0, duration_s=4.0)


def test_the_box_job_path_encodes_its_preview_directly(plan_path, tmp_path):
    engine = PipelineEngine()
    stages: list[str] = []
    report = engine.preview(plan_path, tmp_path / "p.ogg", style="cpop", sliders={"reverb": 0.2}, start_s=1.0,
                            duration_s=3.0, progress=lambda stage, fraction: stages.append(stage))
    assert report["outputs"] == {"mix": str(tmp_path / "p.ogg")}
    assert report["preview_bit_rate"] == PREVIEW_BIT_RATE
    y, sr = audio_io.load_audio(tmp_path / "p.ogg")
    assert y.shape == (2, 3 * sr) and np.isfinite(y).all() and np.abs(y).max() > 0.05
    assert stages[-1] == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ogg"]
