"""The denoiser benchmark's oracle ceilings and lag check (tools/denoise_oracle.py)."""

from __future__ import annotations

import numpy as np
from scipy import signal

from tools import denoise_oracle as orc

SR = 48000


def _voice_and_noise() -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(2 * SR) / SR
    voice = sum(np.sin(2 * np.pi * 220.0 * h * t) / h for h in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2)
    rng = np.random.default_rng(0)
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(t.size))
    noise *= np.std(voice) / np.std(noise) * 10 ** (-10 / 20)
    return voice.astype(np.float32), noise.astype(np.float32)


def _si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    target = ref * (np.dot(est, ref) / np.dot(ref, ref))
    return float(10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2)))


def test_framing_reconstructs_and_oracles_pass_a_clean_take():
    voice, _ = _voice_and_noise()
    assert _si_sdr(orc.istft(orc.stft(voice), voice.size), voice) > 100.0
    assert _si_sdr(orc.oracle_band(voice, voice), voice) > 60.0  # every ideal gain is 1 on the clean take
    assert orc.mel_weights(32).shape == (32, 481)
    np.testing.assert_allclose(orc.mel_weights(64).sum(axis=0), 1.0, atol=1e-9)


def test_ceilings_are_ordered_per_bin_above_bands():
    voice, noise = _voice_and_noise()
    x = voice + noise
    base = _si_sdr(x, voice)
    gains = {name: _si_sdr(f(x, voice), voice) - base for name, f in [
        ("band32", orc.oracle_band), ("band64", lambda a, b: orc.oracle_band(a, b, 64)), ("bin", orc.oracle_bin),
        ("band32+shaped", orc.oracle_band_wiener), ("ls32", lambda a, b: orc.oracle_ls_comb(a, b, comb=False)),
        ("ls32+comb", orc.oracle_ls_comb)]}
    assert gains["band32"] > 1.5, gains
    assert gains["band64"] > gains["band32"], gains  # narrower bands leave less noise between the harmonics
    assert gains["bin"] > gains["band64"], gains
    assert gains["band32+shaped"] > gains["band32"] + 1.0, gains  # the per-bin refinement gets past the bands
    assert gains["ls32"] > gains["band32"], gains  # the least-squares gain is the band's best one
    assert gains["ls32+comb"] > gains["ls32"] + 1.0, gains  # the comb lowers the noise between the harmonics


def test_output_lag_finds_a_delay_either_way():
    voice, noise = _voice_and_noise()
    x = voice + noise
    assert orc.output_lag(x, voice) == 0
    assert orc.output_lag(np.concatenate([np.zeros(480, np.float32), x])[: x.size], voice) == 480
    assert orc.output_lag(x[37:], voice[: x.size - 37]) == -37
