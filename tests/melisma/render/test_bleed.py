"""Bleed removal with the reference on generated takes whose bleed is known (tools.corpus)."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.errors import RenderError
from melisma.render.clean import BleedCanceller, fit_bleed, remove_bleed

from tools.corpus.scenarios import make_scenario


def _db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def _measure(**degradations) -> dict[str, float]:
    """Bleed removed in the pauses and under the voice, and what the voice lost (dB)."""
    sc = make_scenario(seed=3, duration_s=10.0, backing_renderer="numpy", mic=None, **degradations)
    sr, take, voice = sc.sr, sc.take, sc.components["voice"]
    stage = BleedCanceller(reference=sc.backing, model=fit_bleed(take, sc.backing, sr=sr))
    out, voice_out = stage.cancel(take, sr, companions=(voice,))
    env = np.convolve(voice.astype(np.float64) ** 2, np.ones(2400) / 2400, "same")
    pause, sung = env < 1e-6 * env.max(), env > 1e-3 * env.max()
    assert pause.mean() > 0.1 and sung.mean() > 0.3
    return {
        "pause": _db(take[pause]) - _db(out[pause]),
        "under_voice": _db((take - voice)[sung]) - _db((out - voice_out)[sung]),
        "voice_error": _db(voice - voice_out) - _db(voice),
    }


def test_direct_bleed_is_removed_and_the_voice_kept():
    m = _measure(bleed_db=-15.0)
    assert m["pause"] >= 15.0, m
    assert m["under_voice"] >= 10.0, m
    assert m["voice_error"] < -25.0, m  # the suppressor leaves the voice alone


def test_room_bleed_is_removed_by_a_clear_margin():
    m = _measure(bleed_db=-12.0, rir="synthetic", rt60_s=0.4)
    assert m["pause"] >= 15.0, m
    assert m["under_voice"] >= 10.0, m
    assert m["voice_error"] < -25.0, m


def test_headphone_take_is_left_alone():
    sc = make_scenario(seed=4, duration_s=8.0, backing_renderer="numpy", mic=None, bleed_db=None, snr_db=30.0)
    y, action = remove_bleed(sc.take, sc.backing, sr=sc.sr)
    assert action["detected"] is False and action["removed_db"] == 0.0
    np.testing.assert_array_equal(y, sc.take)


def test_aac_room_take_through_remove_bleed_in_place():
    sc = make_scenario(seed=5, duration_s=8.0, backing_renderer="numpy", bleed_db=-10.0, rir="synthetic", aac_kbps=64)
    take = np.ascontiguousarray(sc.take, np.float32)
    before = take.copy()
    y, action = remove_bleed(take, sc.backing, sr=sc.sr, in_place=True)
    assert y is take and action["detected"] is True
    bleed = sc.components["bleed"]
    quiet = np.convolve(sc.components["voice"].astype(np.float64) ** 2, np.ones(2400) / 2400, "same") < 1e-7
    quiet &= np.abs(np.convolve(bleed.astype(np.float64) ** 2, np.ones(2400) / 2400, "same")) > 1e-7
    assert quiet.mean() > 0.05
    assert _db(before[quiet]) - _db(y[quiet]) > 6.0  # the codec's noise limits it; still clearly removed


@pytest.mark.parametrize("in_place", [False, True])
def test_a_take_padded_with_silence_to_the_backing_still_has_its_bleed_removed(in_place):
    # A late take, once aligned, ends before the backing: the rest is digital silence while the
    # backing plays on. That silence must not read as "no bleed" (it did: nothing was removed).
    sc = make_scenario(seed=6, duration_s=8.0, backing_renderer="numpy", mic=None, bleed_db=-15.0)
    sung = sc.take.size - int(0.18 * sc.sr)
    take = np.ascontiguousarray(sc.take, np.float32).copy()
    take[sung:] = 0.0
    y, action = remove_bleed(take, sc.backing, sr=sc.sr, in_place=in_place)
    assert action["detected"] is True and action["removed_db"] > 0.05, action  # the bleed is 15 dB under the voice
    assert (y is take) == in_place
    np.testing.assert_array_equal(y[sung:], 0.0)  # the silence stays silent: no backing cancelled into it
    assert _db(y[:sung] - sc.components["voice"][:sung]) < _db(sc.take[:sung] - sc.components["voice"][:sung]) - 6.0


def test_an_all_silent_take_is_left_alone():
    silent = np.zeros(48000, np.float32)
    y, action = remove_bleed(silent, np.ones(48000, np.float32), sr=48000)
    assert action["detected"] is False
    np.testing.assert_array_equal(y, silent)


def test_stage_without_model_names_what_it_needs():
    with pytest.raises(RenderError, match="fit_bleed"):
        BleedCanceller(reference=np.zeros(100, np.float32))(np.zeros(100, np.float32), 48000)


@pytest.mark.parametrize("bleed_db", [-14.0, None], ids=["speaker", "headphones"])
def test_analysis_removes_bleed_after_alignment(bleed_db, tmp_path):
    from melisma import audio_io
    from melisma.pipeline import analyze

    sc = make_scenario(seed=11, duration_s=10.0, offset_ms=150.0, bleed_db=bleed_db, aac_kbps=64, backing_renderer="numpy")
    take, backing = tmp_path / "take.m4a", tmp_path / "backing.m4a"
    audio_io.write_audio(take, sc.take, sr=sc.sr, bit_rate=64000)
    audio_io.write_audio(backing, sc.backing, sr=sc.sr, bit_rate=128000)
    plan = analyze(take, backing, pitch=False, latency_ms=150.0 if bleed_db is None else None, _work_parent=tmp_path)
    first = plan.record["cleanup"]["actions"][0]
    assert first["action"] == "bleed_removal"
    if bleed_db is None:
        assert first["detected"] is False and first["removed_db"] == 0.0
    else:
        # a -14 dB bleed is 4 % of the take's power: removing it lowers the take by about 0.2 dB or more
        assert first["detected"] is True and first["removed_db"] > 0.15, first
