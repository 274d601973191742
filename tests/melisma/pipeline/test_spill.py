"""A long take's full render keeps its wet vocal / mix in a file-backed buffer: the same bits as in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io, pipeline
from melisma.pipeline import spill

from tools.corpus import make_scenario
from tools.corpus.scenarios import write_scenario


def test_spilled_array_keeps_what_was_written_while_its_pages_are_handed_back(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2, 300_000)).astype(np.float32)
    with spill.SpilledArray(data.shape, folder=tmp_path) as buffer:
        path = buffer.path
        assert path.parent == tmp_path and path.stat().st_size == data.nbytes
        for a in range(0, data.shape[1], 50_000):
            buffer.array[:, a : a + 50_000] = data[:, a : a + 50_000]
            buffer.release()  # as the background thread does at any moment
        buffer.release()
        assert np.array_equal(buffer.array, data)
        buffer.array *= 2.0  # in place, as the balance forms the mix
        buffer.release()
        assert np.array_equal(buffer.array, data * 2.0)
    assert not path.exists()


def test_wet_buffer_spills_only_past_the_limit(tmp_path):
    small, none = spill.wet_buffer(2, 1000, folder=tmp_path, spill_bytes=8000)
    assert none is None and small.shape == (2, 1000) and not list(tmp_path.iterdir())
    big, spilled = spill.wet_buffer(2, 1001, folder=tmp_path, spill_bytes=8000)
    assert spilled is not None and big.shape == (2, 1001) and np.shares_memory(big, spilled.array)
    spilled.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("cached", [False, True])
def test_a_spilled_full_render_is_bit_identical(tmp_path: Path, monkeypatch, cached: bool) -> None:
    sc = make_scenario(seed=31, duration_s=6.0, backing_renderer="numpy", offset_ms=90.0, bleed_db=-16.0, snr_db=25.0)
    paths = write_scenario(sc, tmp_path / "in", take_format="wav", backing_format="wav")
    plan = tmp_path / "plan.json"
    pipeline.analyze_files(paths["take"], paths["backing"], plan, style="cpop")
    if cached:  # the dry vocal kept beside the plan: the wet chain alone fills the buffer
        pipeline.render_plan(plan, tmp_path / "warm.wav", sliders={"reverb": 0.1})
    ref = pipeline.render_plan(plan, tmp_path / "memory.wav", sliders={"reverb": 0.4})
    monkeypatch.setattr(spill, "SPILL_BYTES", 0)
    made: list[spill.SpilledArray] = []
    real_init = spill.SpilledArray.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(spill.SpilledArray, "__init__", recording_init)
    got = pipeline.render_plan(plan, tmp_path / "spilled.wav", sliders={"reverb": 0.4})
    assert len(made) == 1 and not made[0].path.exists()  # it was used, and its file is gone
    a, _ = audio_io.load_audio(tmp_path / "memory.wav")
    b, _ = audio_io.load_audio(tmp_path / "spilled.wav")
    assert np.array_equal(a, b)
    assert got["master"] == ref["master"] and got["balance"] == ref["balance"]
    assert not list(plan.with_name(plan.name + ".cache").glob(".spill-*"))
