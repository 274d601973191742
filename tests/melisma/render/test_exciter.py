"""The bandwidth extension: adds an 8-16 kHz band to a dull voiced take; nothing to silence, noise or esses."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.voice import analyze_voice
from melisma.errors import RenderError
from melisma.render.chain import build_vocal_chain, split_vocal_chain
from melisma.render.exciter import BandwidthExtender
from melisma.semantic import resolve_settings
from scipy import signal

SR = 48000


def lowpass(x: np.ndarray, hz: float = 7500.0) -> np.ndarray:
    return signal.sosfiltfilt(signal.butter(12, 0.93 * hz, fs=SR, output="sos"), x).astype(np.float32)  # steep, as AAC cuts


def band_db(x: np.ndarray, lo: float, hi: float, sl: slice = slice(None)) -> float:
    z = signal.sosfilt(signal.butter(6, [lo, min(hi, 0.45 * SR)], "bandpass", fs=SR, output="sos"), x)[sl]
    return float(10 * np.log10(np.mean(z.astype(np.float64) ** 2) + 1e-30))


def vowel(seconds: float = 1.5, f0: float = 220.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * 2 ** (0.5 / 12 * np.sin(2 * np.pi * 5.5 * t))) / SR
    y = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, int(20000 / f0)))
    return (0.2 * y / np.max(np.abs(y))).astype(np.float32)


def test_adds_energy_above_8_khz_to_a_low_passed_harmonic_voice():
    phone = lowpass(vowel())
    out = BandwidthExtender()(phone, SR)
    settle = slice(SR // 4, None)
    assert band_db(out, 8000, 16000, settle) > band_db(phone, 8000, 16000, settle) + 8  # measured +12
    assert band_db(out, 9000, 16000, settle) > band_db(phone, 9000, 16000, settle) + 15  # measured +25
    # what it adds sits on the voice's own harmonics: the spectrum above 8 kHz peaks at multiples of f0
    spec = np.abs(np.fft.rfft((out - phone)[SR // 4: SR // 4 + SR]))  # 1 Hz bins
    band = spec[9000:12000]
    near = np.array([band[max(0, int(k * 220 - 9000) - 15):int(k * 220 - 9000) + 15].max() for k in range(42, 54)])
    assert np.median(near) > 5 * np.median(band)
    # the band below stays as it was (within a fraction of a dB)
    assert abs(band_db(out, 500, 5000, settle) - band_db(phone, 500, 5000, settle)) < 0.2


def test_a_bright_take_gets_little_or_nothing():
    full = vowel(f0=262.0)
    out = BandwidthExtender()(full, SR)
    settle = slice(SR // 4, None)
    assert band_db(out, 9000, 16000, settle) - band_db(full, 9000, 16000, settle) < 1.0


def test_nothing_on_silence_or_noise_only():
    silence = np.zeros(SR, np.float32)
    assert np.array_equal(BandwidthExtender()(silence, SR), silence)
    rng = np.random.default_rng(1)
    for noise in (0.05 * rng.standard_normal(SR), 1e-4 * rng.standard_normal(SR)):
        noise = lowpass(noise.astype(np.float32))
        assert np.array_equal(BandwidthExtender()(noise, SR), noise)


def test_sibilance_is_not_given_a_top():
    rng = np.random.default_rng(4)
    v = lowpass(vowel(seconds=0.6))
    ess = lowpass(signal.sosfilt(signal.butter(4, [4500, 9000], "bandpass", fs=SR, output="sos"),
                                 0.3 * rng.standard_normal(int(0.3 * SR))).astype(np.float32))
    take = np.concatenate([v, np.zeros(int(0.1 * SR), np.float32), ess, v]).astype(np.float32)
    out = BandwidthExtender()(take, SR)
    ess_part = slice(v.size + int(0.1 * SR) + int(0.05 * SR), v.size + int(0.1 * SR) + ess.size)
    vowel_part = slice(v.size + int(0.1 * SR) + ess.size + SR // 10, None)
    assert band_db(out, 9000, 16000, ess_part) - band_db(take, 9000, 16000, ess_part) < 1.0
    assert band_db(out, 9000, 16000, vowel_part) - band_db(take, 9000, 16000, vowel_part) > 15.0
    assert abs(band_db(out, 5000, 7000, ess_part) - band_db(take, 5000, 7000, ess_part)) < 0.5  # 5-9 kHz not boosted


def test_in_the_vocal_chain_after_the_de_esser_and_in_its_dry_part():
    phone = lowpass(vowel())
    chain, why = build_vocal_chain(resolve_settings("cpop"), analyze_voice(phone, sr=SR), sr=SR)
    names = [type(s).__name__ for s in chain.stages]
    assert "BandwidthExtender" in names and names.index("BandwidthExtender") < names.index("PedalboardStage")
    assert [w["stage"] for w in why].count("bandwidth") == 1
    dry, _ = split_vocal_chain(chain)
    assert any(isinstance(s, BandwidthExtender) for s in dry.stages)
    # the air slider now has a top to move: the energy +1 adds at 9-16 kHz is many times what it
    # adds without the extension (there it lifts a band the take barely has)
    def air_adds(extend: bool) -> float:
        powers = []
        for air in (0.0, 1.0):
            c, _ = build_vocal_chain(resolve_settings("cpop", {"air": air}), analyze_voice(phone, sr=SR), sr=SR)
            c.stages = [s for s in c.stages if extend or not isinstance(s, BandwidthExtender)]
            powers.append(10 ** (band_db(c(phone, SR)[0], 9000, 16000, slice(SR // 4, None)) / 10))
        return powers[1] - powers[0]

    assert air_adds(True) > 10 * max(air_adds(False), 1e-30)


def test_bad_settings_and_rates_are_named():
    with pytest.raises(RenderError, match="target_db"):
        BandwidthExtender(target_db=5.0)
    with pytest.raises(RenderError, match="sr=16000"):
        BandwidthExtender()(np.zeros(100, np.float32), 16000)
