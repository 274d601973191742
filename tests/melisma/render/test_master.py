"""Balance, ducking, the true-peak limiter and the master bus, on real signals."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.loudness import integrated_lufs, true_peak_dbtp
from melisma.errors import RenderError
from melisma.render.balance import balance
from melisma.render.ducker import Ducker
from melisma.render.limiter import TruePeakLimiter
from melisma.render.master import master, mono_compatibility
from melisma.render.stages import Stage
from scipy import signal

SR = 48000


def music_like(seconds, *, seed=0, drums=0.15, dynamics=1.0):
    """Chords, bass, hi-hat noise and drum hits, in 2 s sections of different level."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = np.zeros((2, n), np.float32)
    for i, f in enumerate((55, 110, 220, 277, 330, 440, 660)):
        pan = rng.uniform(0.3, 0.7)
        tone = 0.06 / (1 + 0.3 * i) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
        y[0] += (2 * pan * tone).astype(np.float32)
        y[1] += (2 * (1 - pan) * tone).astype(np.float32)
    y += 0.02 * rng.standard_normal((2, n)).astype(np.float32)
    hits = np.zeros(n, np.float32)
    hits[:: SR // 2] = 1.0
    y += drums * np.convolve(hits, rng.standard_normal(4800) * np.exp(-np.arange(4800) / 900))[:n].astype(np.float32)
    levels = np.repeat(rng.uniform(0.3, 1.0, int(seconds) // 2 + 1), 2 * SR)[:n] ** dynamics
    return (y * levels.astype(np.float32)).astype(np.float32)


def sung_vocal(seconds, *, active=None, seed=1):
    """A vibrato 'voice' (harmonic tone at ~300 Hz) sounding where ``active`` is true."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(300 * (1 + 0.01 * np.sin(2 * np.pi * 6 * t))) / SR
    voice = sum(0.1 / k * np.sin(k * phase) for k in range(1, 12))
    if active is not None:
        voice = voice * active
    voice = voice.astype(np.float32)
    return np.stack([voice, voice])


# --------------------------------------------------------------------------------------------
# Master
# --------------------------------------------------------------------------------------------


INPUTS = {
    "loud-clipped": lambda: np.clip(music_like(8) * 8, -1.0, 1.0),
    "quiet": lambda: music_like(8, seed=2) * np.float32(0.01),
    "dynamic": lambda: music_like(8, seed=3, drums=0.4, dynamics=3.0),
}


@pytest.mark.parametrize("name", INPUTS)
def test_master_hits_loudness_and_true_peak(name):
    mix = INPUTS[name]()
    out, report = master(mix, sr=SR)
    assert out.shape == mix.shape and out.dtype == np.float32
    measured = integrated_lufs(out, sr=SR)
    assert measured == pytest.approx(-14.0, abs=0.5)
    assert report["integrated_lufs"] == pytest.approx(measured, abs=1e-6)
    peak = true_peak_dbtp(out, sr=SR, oversample=4)
    assert peak <= -1.0 and report["true_peak_dbtp"] == pytest.approx(peak, abs=1e-6)
    assert np.abs(out).max() <= 10 ** (-1.0 / 20)  # no sample past the ceiling
    assert set(report["mono"]) >= {"correlation", "mono_loudness_drop_lu", "narrowed"}
    assert report["iterations"] >= 1 and report["limiter_max_gr_db"] >= 0.0


@pytest.mark.parametrize("target, name", [(-16.0, "dynamic"), (-9.0, "loud-clipped"), (-9.0, "quiet")])
def test_master_other_targets(target, name):
    out, report = master(INPUTS[name](), sr=SR, target_lufs=target)
    assert integrated_lufs(out, sr=SR) == pytest.approx(target, abs=0.5)
    assert true_peak_dbtp(out, sr=SR) <= -1.0
    if target == -9.0:
        assert report["limiter_max_gr_db"] > 1.0  # these need the limiter to work


def test_master_refuses_an_impossible_target_and_names_one_that_works():
    mix = music_like(6, seed=4, drums=0.4, dynamics=3.0)
    with pytest.raises(RenderError, match=r"target_lufs=-3 needs.*use target_lufs=-?\d+(\.\d)? or lower") as info:
        master(mix, sr=SR, target_lufs=-3.0)
    suggested = float(str(info.value).split("use target_lufs=")[1].split()[0])
    _out, report = master(mix, sr=SR, target_lufs=suggested)
    assert report["integrated_lufs"] == pytest.approx(suggested, abs=0.5)


def test_master_rejects_silence_and_nan():
    with pytest.raises(RenderError, match="silent"):
        master(np.zeros((2, SR), np.float32), sr=SR)
    bad = music_like(2)
    bad[0, 100] = np.nan
    with pytest.raises(RenderError, match="NaN"):
        master(bad, sr=SR)


def test_master_narrows_a_mix_that_cancels_in_mono():
    mix = music_like(6, seed=5)
    rng = np.random.default_rng(0)
    wide = (0.1 * rng.standard_normal(mix.shape[1])).astype(np.float32)
    mix = mix + np.stack([wide, -wide])  # a big out-of-phase component vanishes in mono
    before = mono_compatibility(mix, sr=SR)
    assert before["mono_loudness_drop_lu"] > 3.0
    out, report = master(mix, sr=SR, max_mono_drop_lu=3.0)
    assert report["mono"]["narrowed"] and report["mono"]["side_gain"] < 1.0
    after = mono_compatibility(out, sr=SR)
    assert after["mono_loudness_drop_lu"] <= 3.2
    assert after["correlation"] > before["correlation"]
    assert report["integrated_lufs"] == pytest.approx(-14.0, abs=0.5)


def test_mono_compatibility_reports_correlation():
    y = music_like(3)[0]
    assert mono_compatibility(np.stack([y, y]), sr=SR) == {
        "correlation": 1.0,
        "mono_loudness_drop_lu": pytest.approx(0.0, abs=1e-6),
    }
    assert mono_compatibility(np.stack([y, -y]), sr=SR)["correlation"] == -1.0


def test_master_mono_input_keeps_shape():
    out, report = master(music_like(3)[0], sr=SR, target_lufs=-16.0)
    assert out.ndim == 1 and report["integrated_lufs"] == pytest.approx(-16.0, abs=0.5)


# --------------------------------------------------------------------------------------------
# Limiter
# --------------------------------------------------------------------------------------------


def test_limiter_is_a_streaming_stage():
    limiter = TruePeakLimiter(ceiling_dbtp=-1.0, lookahead_ms=5.0, release_ms=80.0)
    assert isinstance(limiter, Stage)
    x = music_like(3, seed=6) * np.float32(4.0)
    whole = limiter(x, SR, reset=True)
    first = limiter(x[:, :50_001], SR, reset=True)
    second = limiter(x[:, 50_001:], SR, reset=False)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-6)
    assert limiter.describe()["ceiling_dbtp"] == -1.0


def test_limiter_aligned_output_holds_the_ceiling_with_lookahead():
    x = music_like(4, seed=7) * np.float32(5.0)
    limiter = TruePeakLimiter(ceiling_dbtp=-1.0)
    y = limiter.limit(x, SR)
    assert y.shape == x.shape
    assert true_peak_dbtp(y, sr=SR) <= -0.9  # the master leaves a margin and verifies
    assert limiter.max_gain_reduction_db > 6.0
    # Aligned: where the limiter is idle the output is the input, sample for sample.
    quiet = TruePeakLimiter(ceiling_dbtp=-1.0).limit(x * np.float32(0.01), SR)
    np.testing.assert_array_equal(quiet, x * np.float32(0.01))
    # Look-ahead: the gain is already down before a sudden peak arrives.
    step = np.full((2, SR), 0.1, np.float32)
    step[:, SR // 2 :] = 2.0
    z = TruePeakLimiter(ceiling_dbtp=-1.0, lookahead_ms=5.0).limit(step, SR)
    assert z[0, SR // 2 - 10] < 0.1 * 0.9  # gain already reduced 10 samples before the jump
    assert z[0, SR // 2 - 1000] == pytest.approx(0.1)  # untouched well before it


# --------------------------------------------------------------------------------------------
# Balance and ducking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [-4.0, -1.0, 0.0, 2.5, 6.0])
def test_balance_hits_requested_ratio(target):
    backing = music_like(6, seed=8)
    vocal = sung_vocal(6) * np.float32(0.05)
    v, b, report = balance(vocal, backing, sr=SR, vocal_to_backing_lu=target)
    measured = integrated_lufs(v, sr=SR) - integrated_lufs(b, sr=SR)
    assert measured == pytest.approx(target, abs=1.0)
    assert report["vocal_to_backing_lu"] == pytest.approx(measured, abs=0.01)
    assert report["target_lu"] == target and report["backing_gain_db"] == 0.0
    np.testing.assert_array_equal(b, backing)  # the backing keeps its level


def test_balance_with_ducking_still_hits_ratio():
    backing = music_like(6, seed=9)
    active = (np.arange(6 * SR) < 3 * SR).astype(np.float32)
    vocal = sung_vocal(6, active=active)
    v, b, report = balance(vocal, backing, sr=SR, vocal_to_backing_lu=1.0, duck_db=3.0)
    assert integrated_lufs(v, sr=SR) - integrated_lufs(b, sr=SR) == pytest.approx(1.0, abs=1.0)
    assert 2.5 <= report["duck_db_max"] <= 3.0
    assert 0.3 < report["duck_active_fraction"] < 0.7


def test_balance_refuses_silent_or_mismatched_input():
    backing = music_like(2)
    with pytest.raises(RenderError, match="vocal is silent"):
        balance(np.zeros_like(backing), backing, sr=SR, vocal_to_backing_lu=0.0)
    with pytest.raises(RenderError, match="same shape"):
        balance(backing[:, :100], backing, sr=SR, vocal_to_backing_lu=0.0)


def band_level_db(y, low, high, start, stop):
    sos = signal.butter(4, [low, high], btype="bandpass", fs=SR, output="sos")
    band = signal.sosfilt(sos, y[0].astype(np.float64))[start:stop]
    return 10 * np.log10(np.mean(band**2))


def test_ducker_dips_presence_band_only_while_vocal_sings():
    rng = np.random.default_rng(10)
    backing = (0.1 * rng.standard_normal((2, 6 * SR))).astype(np.float32)
    active = ((np.arange(6 * SR) >= 1 * SR) & (np.arange(6 * SR) < 3 * SR)).astype(np.float32)
    vocal = sung_vocal(6, active=active)
    ducker = Ducker(duck_db=4.0, sidechain=vocal)
    ducked = ducker(backing, SR)
    singing = (int(1.5 * SR), int(2.8 * SR))
    silent = (int(4.5 * SR), int(6 * SR))  # well after the release
    presence_dip = band_level_db(backing, 1800, 2200, *singing) - band_level_db(ducked, 1800, 2200, *singing)
    assert presence_dip == pytest.approx(4.0, abs=0.6)
    assert abs(band_level_db(backing, 1800, 2200, *silent) - band_level_db(ducked, 1800, 2200, *silent)) < 0.1
    # Outside the presence band the backing is (nearly) untouched even while the vocal sings.
    assert abs(band_level_db(backing, 100, 200, *singing) - band_level_db(ducked, 100, 200, *singing)) < 0.5
    assert abs(band_level_db(backing, 12000, 16000, *singing) - band_level_db(ducked, 12000, 16000, *singing)) < 0.5
    # Streaming with the sidechain consumed block by block sounds the same.
    first = ducker(backing[:, : 2 * SR + 7], SR, reset=True)
    second = ducker(backing[:, 2 * SR + 7 :], SR, reset=False)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), ducked, atol=1e-5)
