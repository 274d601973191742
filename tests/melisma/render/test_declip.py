"""The AR declipper: detected automatically, repairs 5-10 % clipping, leaves everything else alone."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.cleanup import analyze_cleanup, detect_clipping
from melisma.errors import RenderError
from melisma.render.clean import build_cleanup_chain, clean_take
from melisma.render.declip import ARDeclipper

from tools.corpus import degrade

SR = 48000


def sung(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A sung-like vowel: a harmonic tone with vibrato and a falling spectrum, phrases with gaps, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 196.0 * 2 ** (0.6 / 12 * np.sin(2 * np.pi * 5.8 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tone = sum(np.cos(k * phase + rng.uniform(0, 2 * np.pi)) / k**2 for k in range(1, 20))  # about -12 dB/octave
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 0.6 * t)
    y = tone * env * (np.sin(2 * np.pi * 0.45 * t) > -0.6) + 1e-3 * rng.standard_normal(t.size)
    return (0.9 * y / np.max(np.abs(y))).astype(np.float32)


def sdr_db(est: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((est.astype(np.float64) - ref) ** 2)))


@pytest.mark.parametrize("fraction, min_gain_db", [(0.05, 6.0), (0.10, 8.0)])  # measured +10.1, +13.7 dB
def test_repairs_generated_clipping_in_the_clipped_regions(fraction, min_gain_db):
    truth = sung()
    clipped, drive_db = degrade.clip(truth, fraction=fraction)
    ref = truth * np.float32(10 ** (drive_db / 20))
    found = detect_clipping(clipped, sr=SR)  # found, not told
    assert abs(found["fraction"] - fraction) < 0.01 and found["regions"] > 50
    where = np.abs(clipped) >= found["threshold"]
    fixed = ARDeclipper(threshold=found["threshold"]).declip(clipped, SR)
    gain = sdr_db(fixed[where], ref[where]) - sdr_db(clipped[where], ref[where])
    assert gain > min_gain_db
    assert sdr_db(fixed, ref) > sdr_db(clipped, ref) + min_gain_db - 1.0  # overall too
    assert np.array_equal(fixed[~where], clipped[~where])  # the samples that were not clipped are the take's own
    # consistent: every rebuilt sample lies at or beyond the clip level, on its run's side
    assert np.all(np.sign(fixed[where]) == np.sign(clipped[where]))
    assert np.all(np.abs(fixed[where]) >= found["threshold"] * (1 - 1e-6))


def test_unclipped_take_comes_back_bit_identical():
    truth = sung(seed=3) * np.float32(0.8)
    assert detect_clipping(truth, sr=SR)["regions"] == 0
    analysis = analyze_cleanup(truth, sr=SR)
    _, actions = build_cleanup_chain(analysis, sr=SR)
    assert "declip" not in [a["action"] for a in actions]
    # the stage itself, with a rail above the take's peak, changes no sample
    same = ARDeclipper(threshold=float(np.max(np.abs(truth))) + 1e-3).declip(truth, SR)
    assert same.dtype == np.float32 and np.array_equal(same, truth)


def test_clean_up_runs_it_first_when_clipping_is_detected():
    truth = sung(seconds=3.0, seed=5)
    clipped, drive_db = degrade.clip(truth, fraction=0.07)
    ref = truth * np.float32(10 ** (drive_db / 20))
    analysis = analyze_cleanup(clipped, sr=SR)
    chain, actions = build_cleanup_chain(analysis, sr=SR, noise_reduction=0.0)
    assert isinstance(chain.stages[0], ARDeclipper) and actions[0]["action"] == "declip"
    assert actions[0]["regions"] == analysis["clipping"]["regions"] > 100
    cleaned, _ = clean_take(clipped, sr=SR, analysis=analysis, noise_reduction=0.0)
    where = np.abs(clipped) >= analysis["clipping"]["threshold"]
    # the high-pass after it moves every sample a little: compare through the same filter
    linear = chain.stages[1]
    assert sdr_db(cleaned[where], linear(ref, SR)[where]) > sdr_db(linear(clipped, SR)[where], linear(ref, SR)[where]) + 4


def test_stream_is_the_offline_result_late_by_its_latency():
    truth = sung(seed=2)
    clipped, _ = degrade.clip(truth, fraction=0.08)
    stage = ARDeclipper(threshold=float(detect_clipping(clipped, sr=SR)["threshold"]))
    offline = stage.declip(clipped, SR)
    late = stage.latency_samples(SR)
    streamed = np.concatenate([stage(clipped[a:a + 777], SR, reset=a == 0) for a in range(0, clipped.size, 777)])
    np.testing.assert_array_equal(streamed[:late], 0.0)
    np.testing.assert_array_equal(streamed[late:], offline[: clipped.size - late])
    assert not np.array_equal(offline, clipped)


@pytest.mark.parametrize("kwargs, word", [({"threshold": 0.0}, "threshold"), ({"threshold": float("nan")}, "threshold"),
                                          ({"order": 2}, "order"), ({"frame_ms": 0.0}, "frame_ms")])
def test_bad_settings_name_the_value(kwargs, word):
    with pytest.raises(RenderError, match=word):
        ARDeclipper(**kwargs)
