"""Loudness (BS.1770-4) and true peak: checked against pyloudnorm and the EBU/ITU references."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
from melisma.analysis.loudness import (
    KWeightedHops,
    integrated_lufs,
    k_weighting_sos,
    sample_peak_dbfs,
    short_term_lufs,
    true_peak_dbtp,
)
from melisma.errors import AnalysisError

SR = 48000


def sine(freq_hz, seconds, *, amplitude=1.0, phase=0.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def music_like(seconds, seed=0):
    """Tones, noise and drum hits in sections of different level (exercises the gates)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = np.zeros((2, n), np.float32)
    for f in (55, 110, 220, 330, 440, 880):
        y[0] += 0.05 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
        y[1] += 0.04 * np.sin(2 * np.pi * f * 1.002 * t + rng.uniform(0, 6))
    y += 0.02 * rng.standard_normal((2, n)).astype(np.float32)
    hits = np.zeros(n, np.float32)
    hits[:: SR // 2] = 1.0
    y += 0.3 * np.convolve(hits, rng.standard_normal(2400) * np.exp(-np.arange(2400) / 400))[:n].astype(np.float32)
    levels = np.repeat(rng.uniform(0.002, 1.0, int(seconds) + 1), SR)[:n].astype(np.float32)
    levels[: SR] = 0.0  # a silent intro, removed by the absolute gate
    return (y * levels).astype(np.float32)


def pyloudnorm_lufs(y):
    y = np.atleast_2d(y)
    return pyloudnorm.Meter(SR).integrated_loudness(y.T.astype(np.float64))


@pytest.mark.parametrize(
    "make",
    [
        lambda: 0.1 * np.random.default_rng(1).standard_normal((2, 5 * SR)).astype(np.float32),
        lambda: np.stack([sine(100, 4, amplitude=0.5), sine(5000, 4, amplitude=0.2)]),
        lambda: sine(60, 4, amplitude=0.3),
        lambda: music_like(8, seed=2),
        lambda: music_like(6, seed=3) * 0.01,
    ],
    ids=["noise", "tones", "mono-bass", "music", "quiet-music"],
)
def test_integrated_lufs_matches_pyloudnorm(make):
    y = make()
    ours = integrated_lufs(y, sr=SR)
    reference = pyloudnorm_lufs(y)
    assert abs(ours - reference) < 0.1, (ours, reference)


def test_bs1770_sine_references():
    # BS.1770-4: a 0 dBFS 1 kHz sine in one channel reads -3.01 LKFS; EBU Tech 3341 case 1:
    # a stereo sine at -23 dBFS reads -23.0 LUFS (so 0 dBFS in both channels reads 0.0).
    tone = sine(997, 5)
    assert integrated_lufs(tone, sr=SR) == pytest.approx(-3.01, abs=0.02)
    assert integrated_lufs(np.stack([tone, tone]), sr=SR) == pytest.approx(0.0, abs=0.02)
    quiet = tone * np.float32(10 ** (-23 / 20))
    assert integrated_lufs(np.stack([quiet, quiet]), sr=SR) == pytest.approx(-23.0, abs=0.02)


def test_k_weighting_matches_bs1770_table_at_48k():
    sos = k_weighting_sos(48000)
    assert sos[0, :3] == pytest.approx([1.53512485958697, -2.69169618940638, 1.19839281085285], abs=1e-9)
    assert sos[0, 4:] == pytest.approx([-1.69065929318241, 0.73248077421585], abs=1e-9)
    assert sos[1, 4:] == pytest.approx([-1.99004745483398, 0.99007225036621], abs=1e-9)


def test_gating_ignores_silence_and_other_rates():
    tone = np.stack([sine(997, 3, amplitude=0.1)] * 2)
    padded = np.concatenate([np.zeros((2, 10 * SR), np.float32), tone], axis=1)
    # Ungated, 10 s of silence would pull the 3 s tone down by 6.4 LU; gated, only the blocks
    # straddling the onset count, as in pyloudnorm.
    gated = integrated_lufs(padded, sr=SR)
    assert gated == pytest.approx(pyloudnorm_lufs(padded), abs=0.1)
    assert abs(gated - integrated_lufs(tone, sr=SR)) < 0.5
    assert integrated_lufs(np.zeros((2, SR), np.float32), sr=SR) == -math.inf
    tone44 = sine(997, 3, amplitude=0.1, sr=44100)
    assert integrated_lufs(tone44, sr=44100) == pytest.approx(integrated_lufs(tone[0], sr=SR), abs=0.02)


def test_short_signal_and_streaming_accumulator():
    short = sine(997, 0.2)
    assert integrated_lufs(short, sr=SR) == pytest.approx(-3.01, abs=0.05)
    y = music_like(5, seed=4)
    acc = KWeightedHops(SR, channels=2)
    for a in range(0, y.shape[1], 12345):  # odd block sizes must not matter
        acc.add(y[:, a : a + 12345])
    assert acc.integrated_lufs() == pytest.approx(integrated_lufs(y, sr=SR), abs=1e-6)


def test_short_term_lufs_tracks_level_changes():
    loud = np.stack([sine(997, 4, amplitude=1.0)] * 2)
    soft = loud * np.float32(0.1)
    st = short_term_lufs(np.concatenate([loud, soft], axis=1), sr=SR, window_s=3.0, hop_s=1.0)
    assert st.shape == (6,)
    assert st[0] == pytest.approx(0.0, abs=0.05)
    assert st[-1] == pytest.approx(-20.0, abs=0.05)


def test_invalid_input_is_refused():
    with pytest.raises(AnalysisError, match="NaN"):
        integrated_lufs(np.full(SR, np.nan, np.float32), sr=SR)
    with pytest.raises(AnalysisError, match="NaN"):
        true_peak_dbtp(np.full(SR, np.nan, np.float32), sr=SR)
    with pytest.raises(AnalysisError, match="channels"):
        integrated_lufs(np.zeros((SR, 2), np.float32), sr=SR)


def test_true_peak_finds_intersample_peak():
    # fs/4 at 45 degrees: every sample is at 0.707 (-3.01 dBFS) but the wave peaks at 1.0.
    y = sine(SR / 4, 1, phase=np.pi / 4)
    fade = np.ones_like(y)
    fade[:2000] = np.linspace(0, 1, 2000)
    fade[-2000:] = np.linspace(1, 0, 2000)
    y = y * fade
    assert sample_peak_dbfs(y) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_dbtp(y, sr=SR) == pytest.approx(0.0, abs=0.05)
    assert true_peak_dbtp(y, sr=SR, oversample=8) == pytest.approx(0.0, abs=0.05)
    assert true_peak_dbtp(y, sr=SR, oversample=1) == pytest.approx(-3.01, abs=0.01)


def test_true_peak_never_below_sample_peak_and_silence():
    y = music_like(4, seed=5)
    assert true_peak_dbtp(y, sr=SR) >= sample_peak_dbfs(y)
    clipped = np.clip(y * 20, -1, 1)  # brick-wall clipping makes intersample overs
    assert true_peak_dbtp(clipped, sr=SR) > 0.3
    assert true_peak_dbtp(np.zeros(1000, np.float32), sr=SR) == -math.inf


def test_true_peak_agrees_with_brute_force_oversampling():
    from scipy.signal import resample_poly

    y = music_like(3, seed=6)[:, SR:]
    brute = 20 * np.log10(np.abs(resample_poly(y.astype(np.float64), 16, 1, axis=1)).max())
    assert true_peak_dbtp(y, sr=SR) == pytest.approx(brute, abs=0.2)


@pytest.mark.parametrize("gain_db", [-15.0, -9.0, 0.0, 10.0])
def test_meter_loudness_at_a_gain_regates_like_measuring_the_scaled_signal(gain_db: float) -> None:
    """Quiet stretches cross the -70 LUFS absolute gate as the gain moves: the meter must gate again on
    the scaled energies, not shift one measured figure by the gain."""
    from melisma.analysis.loudness import LoudnessMeter

    rng = np.random.default_rng(5)
    louder = 0.0016 * rng.standard_normal((2, 4 * SR))  # about -50 LUFS
    quiet = 0.00063 * rng.standard_normal((2, 6 * SR))  # about -58 LUFS: within the relative gate, near the absolute one
    y = np.concatenate([louder, quiet], axis=1).astype(np.float32)
    meter = LoudnessMeter(SR, channels=2, stereo=True)
    meter.add(y)
    scaled = (y.astype(np.float64) * 10 ** (gain_db / 20)).astype(np.float32)
    assert meter.integrated_lufs(gain_db=gain_db) == pytest.approx(integrated_lufs(scaled, sr=SR), abs=0.01)
    if gain_db == -15.0:  # the quiet part fell under -70 LUFS: more than a shift of the unscaled figure
        assert meter.integrated_lufs(gain_db=gain_db) - (meter.integrated_lufs() + gain_db) > 1.0
    # stereo terms: identical channels lose nothing in the mono sum; side gain 0 keeps the mid only
    twin = LoudnessMeter(SR, channels=2, stereo=True)
    twin.add(np.stack([y[0], y[0]]))
    assert twin.mono_lufs() == pytest.approx(twin.stereo_lufs(), abs=1e-9) and twin.correlation == pytest.approx(1.0)
    assert meter.stereo_lufs(side_gain=0.0) == pytest.approx(meter.mono_lufs(), abs=1e-9)


@pytest.mark.parametrize("grain", [16, 32, 256])
def test_true_peak_envelope_skips_only_stretches_that_cannot_reach_the_threshold(grain: int) -> None:
    """Sparse loud bursts in a quiet signal take the grain-by-grain path (a partial last grain too): every
    interval that could reach the threshold gets exactly the fully interpolated value; others at least
    their sample magnitude."""
    from melisma.analysis.loudness import Interpolator

    interp = Interpolator()
    rng = np.random.default_rng(7)
    for n in (1000, 4097, 20011):
        x = (0.01 * rng.standard_normal((2, n + interp.left + interp.right))).astype(np.float32)
        for start in rng.integers(0, x.shape[1] - 40, size=5):
            x[:, start : start + 40] *= 80.0  # bursts up to ~ -3 dBFS, a few grains out of many
        full = interp.envelope(x, threshold=0.0, grain=grain)  # everything interpolated
        threshold = float(np.quantile(full, 0.999))
        skipped = interp.envelope(x, threshold=threshold, grain=grain)
        could_reach = full > threshold
        assert could_reach.any()
        np.testing.assert_array_equal(skipped[could_reach], full[could_reach])
        assert np.all(skipped <= full)
        assert np.all(skipped >= np.abs(x[:, interp.left : interp.left + n]).max(axis=0))
