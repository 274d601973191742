"""A long take's analysis keeps the full-rate take in files, not memory (pipeline/spill.py), with
the very same result: the plan and every sample of the vocal it keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma import pipeline
from melisma.pipeline import spill

from tools.corpus import make_scenario
from tools.corpus.scenarios import write_scenario


def _plan_and_vocal(plan_path):
    record = json.loads(plan_path.read_text())
    for key in ("timings_s", "melisma_version", "platform", "created", "work_files", "files"):
        record.pop(key, None)
    vocal = np.load(plan_path.with_name(plan_path.name + ".cache") / "vocal.npy")
    return record, vocal


@pytest.mark.parametrize("offset_ms", [140.0, -60.0])
def test_a_spilled_analysis_is_the_in_memory_one_sample_for_sample(tmp_path, monkeypatch, offset_ms):
    sc = make_scenario(seed=31, duration_s=5.0, backing_renderer="numpy", offset_ms=offset_ms, bleed_db=-15.0,
                       snr_db=25.0)
    paths = write_scenario(sc, tmp_path / "in", take_format="wav", backing_format="wav")
    kept = pipeline.analyze_files(paths["take"], paths["backing"], tmp_path / "memory.json", style="cpop")
    spilled_files = []
    real = spill.SpilledArray

    class Watched(real):  # the real buffer, noting where its file was
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            spilled_files.append(self.path)

    open_at_cleanup: list[int] = []

    def progress(stage, fraction):  # how many buffers are still open when the clean-up starts
        if stage == "cleanup" and not open_at_cleanup:
            open_at_cleanup.append(sum(p.exists() for p in spilled_files))

    monkeypatch.setattr(spill, "ANALYSIS_SPILL_BYTES", 0)  # every take counts as long
    monkeypatch.setattr(spill, "SpilledArray", Watched)
    spilled = pipeline.analyze_files(paths["take"], paths["backing"], tmp_path / "spilled.json", style="cpop",
                                     progress=progress)
    assert len(spilled_files) >= 4, "the take was not spilled"
    # the take's 16 kHz copy and the alignment's weighted copies are closed once aligned: only the
    # backing's 16 kHz copy (the pitch tracker's bleed gate reads it) and the aligned take are open
    assert open_at_cleanup == [2]
    assert not any(p.exists() for p in spilled_files), "the spill file was left behind"
    assert not (tmp_path / "spilled.json.cache" / "take.npy").exists()
    a, va = _plan_and_vocal(tmp_path / "memory.json")
    b, vb = _plan_and_vocal(tmp_path / "spilled.json")
    assert np.array_equal(va, vb)
    assert a["alignment"]["offset_ms"] == b["alignment"]["offset_ms"]
    assert a["cleanup"] == b["cleanup"] and a["voice"] == b["voice"] and a["pitch"] == b["pitch"]
    assert kept.record["alignment"] == spilled.record["alignment"]


def test_a_spilled_take_without_backing_is_the_same(tmp_path, monkeypatch):
    sc = make_scenario(seed=32, duration_s=4.0, backing_renderer="numpy", snr_db=25.0)
    paths = write_scenario(sc, tmp_path / "in", take_format="wav", backing_format="wav")
    pipeline.analyze_files(paths["take"], None, tmp_path / "memory.json", style="cpop")
    monkeypatch.setattr(spill, "ANALYSIS_SPILL_BYTES", 0)
    pipeline.analyze_files(paths["take"], None, tmp_path / "spilled.json", style="cpop")
    a, va = _plan_and_vocal(tmp_path / "memory.json")
    b, vb = _plan_and_vocal(tmp_path / "spilled.json")
    assert np.array_equal(va, vb) and a["pitch"] == b["pitch"]


def test_a_long_takes_correction_in_a_file_backed_buffer_is_the_same(tmp_path, monkeypatch):
    sc = make_scenario(seed=33, duration_s=5.0, backing_renderer="numpy", offset_ms=90.0, bleed_db=-16.0, snr_db=25.0)
    paths = write_scenario(sc, tmp_path / "in", take_format="wav", backing_format="wav")
    plan = tmp_path / "plan.json"
    pipeline.analyze_files(paths["take"], paths["backing"], plan, style="cpop")
    cache = plan.with_name(plan.name + ".cache")

    def render(name):
        for f in [*cache.glob("corrected-*.npy"), *cache.glob("dry-*.npy"), *cache.glob("toned-*.npy")]:
            f.unlink()
        pipeline.render_plan(plan, tmp_path / name, sliders={"tuning": 0.8})
        (corrected,) = cache.glob("corrected-*.npy")
        return np.load(corrected)

    in_memory = render("a.wav")
    monkeypatch.setattr(spill, "ANALYSIS_SPILL_BYTES", 0)
    spilled = render("b.wav")
    assert np.array_equal(in_memory, spilled)
    assert not list(cache.glob(".spill-*")), "the buffer's file was left behind"
    from melisma import audio_io

    assert np.array_equal(audio_io.load_audio(tmp_path / "a.wav")[0], audio_io.load_audio(tmp_path / "b.wav")[0])
