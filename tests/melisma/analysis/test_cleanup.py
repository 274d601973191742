"""Clean-up analysis: hum, clipping, noise floor/profile, rumble, warnings, odd input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma.analysis.cleanup import (
    analyze_cleanup,
    detect_clipping,
    detect_hum,
    estimate_noise,
    estimate_rumble,
    noise_psd_at,
)
from melisma.errors import AnalysisError

SR = 48000


def sung_phrases(sr: int = SR, *, seed: int = 0, f0s=(220.0, 330.0, 262.0), note_s: float = 1.4, gap_s: float = 0.6,
                 peak: float = 0.3) -> np.ndarray:
    """Harmonic vowels with 5.5 Hz vibrato and decaying tails, separated by gaps."""
    rng = np.random.default_rng(seed)
    parts = []
    for f0 in f0s:
        parts.append(np.zeros(int(gap_s * sr)))
        t = np.arange(int(note_s * sr)) / sr
        f = f0 * 2 ** (0.5 / 12 * np.sin(2 * np.pi * (5.5 + rng.uniform(-0.3, 0.3)) * t))
        phase = 2 * np.pi * np.cumsum(f) / sr
        y = sum(np.sin(k * phase) / k for k in range(1, 25) if k * f0 * 1.1 < sr / 2)
        env = np.minimum(1.0, t / 0.03) * np.where(t > note_s - 0.4, np.exp(-(t - (note_s - 0.4)) * 10), 1.0)
        parts.append(y * env)
    parts.append(np.zeros(int(gap_s * sr)))
    x = np.concatenate(parts)
    return (peak * x / np.max(np.abs(x))).astype(np.float32)


def add_hum(x: np.ndarray, hum_hz: float, level: float, sr: int = SR) -> np.ndarray:
    t = np.arange(x.size) / sr
    hum = sum(level / k * np.sin(2 * np.pi * k * hum_hz * t + k) for k in (1, 2, 3, 5))
    return (x + hum).astype(np.float32)


def white(n: int, level: float, seed: int = 1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


# ---------------------------------------------------------------------------------------- hum


@pytest.mark.parametrize("hum_hz", [49.97, 50.0, 59.93, 60.05])
def test_hum_detected_at_the_right_mains_frequency(hum_hz):
    voice = sung_phrases()
    take = add_hum(voice + white(voice.size, 0.003), hum_hz, 0.005)
    hum = detect_hum(take, sr=SR)
    assert hum["detected"]
    assert hum["nominal_hz"] == (50.0 if hum_hz < 55 else 60.0)
    assert abs(hum["fundamental_hz"] - hum_hz) < 0.05
    assert 1 in hum["harmonics"] and 3 in hum["harmonics"]
    assert all(abs(h - k * hum["fundamental_hz"]) < 0.01 for h, k in zip(hum["harmonics_hz"], hum["harmonics"], strict=False))
    assert -60.0 < hum["level_db"] < -40.0  # 5 mV fundamental + harmonics: about -46 dBFS


def test_no_hum_on_voice_and_noise_alone():
    voice = sung_phrases(f0s=(100.0, 150.0, 120.0))  # notes on mains harmonics: a held note is not hum
    hum = detect_hum(voice + white(voice.size, 0.003), sr=SR)
    assert not hum["detected"]
    assert hum["fundamental_hz"] is None and hum["harmonics_hz"] == []


def test_hum_off_the_grid_is_not_mains():
    voice = sung_phrases()
    assert not detect_hum(add_hum(voice + white(voice.size, 0.003), 56.0, 0.005), sr=SR)["detected"]


def test_no_hum_on_real_recordings(shared_data):
    from melisma.audio_io import load_audio

    for rel in ("vocadito/Audio/vocadito_1.wav", "noise/smstools/rain.wav", "noise/sonicpi_cc0/vinyl_hiss.flac"):
        x, sr = load_audio(shared_data / rel, sr=SR, mono=True)
        assert not detect_hum(x[: 20 * SR], sr=sr)["detected"], rel


def test_hum_detected_under_a_real_voice(shared_data):
    from melisma.audio_io import load_audio

    x, _ = load_audio(shared_data / "vocadito/Audio/vocadito_1.wav", sr=SR, mono=True)
    x = x[: 15 * SR]
    level = 0.03 * float(np.sqrt(np.mean(x**2)))  # hum 30 dB under the voice
    hum = detect_hum(add_hum(x, 60.02, level), sr=SR)
    assert hum["detected"] and abs(hum["fundamental_hz"] - 60.02) < 0.05


# ----------------------------------------------------------------------------------- clipping


def test_clipping_fraction_and_rail():
    voice = sung_phrases(peak=0.6)
    rail = 0.3
    clipped = np.clip(voice, -rail, rail)
    true_fraction = float(np.mean(np.abs(voice) > rail))
    c = detect_clipping(clipped, sr=SR)
    assert c["regions"] > 10
    assert abs(c["fraction"] - true_fraction) < 0.15 * true_fraction
    assert c["threshold"] == pytest.approx(rail, rel=1e-3)
    assert c["heavy"] == (true_fraction >= 0.01)


def test_unclipped_signals_read_zero():
    assert detect_clipping(sung_phrases(), sr=SR)["regions"] == 0
    t = np.arange(SR) / SR
    assert detect_clipping((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr=SR)["fraction"] == 0.0


def test_heavy_clipping_warns():
    voice = sung_phrases(peak=1.0)
    take = np.clip(voice * 4.0, -0.99, 0.99)  # exact flat tops, as a phone ADC makes them
    a = analyze_cleanup(take.astype(np.float32), sr=SR)
    assert a["clipping"]["heavy"]
    assert any(w.startswith("heavy clipping:") for w in a["warnings"])


# -------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0])
def test_noise_floor_and_snr(snr_db):
    voice = sung_phrases()
    active = np.abs(voice) > 0
    voice_power = float(np.mean(voice[active].astype(np.float64) ** 2))
    sigma = np.sqrt(voice_power / 10 ** (snr_db / 10))
    n = estimate_noise(voice + white(voice.size, sigma), sr=SR)
    assert n["floor_dbfs"] == pytest.approx(20 * np.log10(sigma), abs=1.0)
    assert n["snr_db"] == pytest.approx(snr_db, abs=3.0)


def test_noise_profile_follows_the_noise_spectrum():
    rng = np.random.default_rng(3)
    spectrum = np.fft.rfft(rng.standard_normal(6 * SR))
    freqs = np.fft.rfftfreq(6 * SR, 1 / SR)
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 20.0)), n=6 * SR)
    pink = (0.01 * pink / np.std(pink)).astype(np.float32)
    n = estimate_noise(pink, sr=SR)
    psd = noise_psd_at(n, np.array([250.0, 1000.0, 4000.0]))
    slope = 10 * np.log10(psd[:-1] / psd[1:])  # pink: 6 dB per two octaves
    assert np.all(np.abs(slope - 6.0) < 1.5)
    # the profile integrates to the noise power
    band_edges = np.linspace(0, SR / 2, 4000)
    total = np.sum(noise_psd_at(n, band_edges[1:] - 3.0)) * (band_edges[1] - band_edges[0])
    assert 10 * np.log10(total) == pytest.approx(n["floor_dbfs"], abs=1.5)


def test_noisy_take_warns():
    voice = sung_phrases()
    a = analyze_cleanup(voice + white(voice.size, 0.05), sr=SR)
    assert any(w.startswith("very noisy take: SNR") for w in a["warnings"])


# ------------------------------------------------------------------------------------- rumble


def test_rumble_raises_the_highpass():
    voice = sung_phrases()
    t = np.arange(voice.size) / SR
    rumbly = voice + (0.2 * np.sin(2 * np.pi * 18 * t) + 0.1 * np.sin(2 * np.pi * 35 * t)).astype(np.float32)
    quiet, loud = estimate_rumble(voice, sr=SR), estimate_rumble(rumbly, sr=SR)
    assert loud["low_energy_db"] > quiet["low_energy_db"] + 20
    assert loud["highpass_hz"] > quiet["highpass_hz"]
    assert 60.0 <= quiet["highpass_hz"] <= 100.0 and loud["highpass_hz"] <= 100.0


# ----------------------------------------------------------------------------- whole analysis


def test_analysis_is_json_and_complete():
    voice = sung_phrases()
    a = analyze_cleanup(add_hum(voice + white(voice.size, 0.003), 50.0, 0.005), sr=SR)
    again = json.loads(json.dumps(a))
    assert again == a
    assert set(a) == {"rumble", "hum", "clipping", "noise", "gate", "warnings"}
    assert a["noise"]["floor_dbfs"] < a["gate"]["threshold_dbfs"] < a["noise"]["signal_dbfs"]
    assert len(a["noise"]["band_hz"]) == len(a["noise"]["profile_db"]) > 20


@pytest.mark.parametrize("sr", [16000, 22050, 44100])
def test_other_rates(sr):
    voice = sung_phrases(sr)
    a = analyze_cleanup(add_hum(voice + white(voice.size, 0.003), 60.0, 0.005, sr=sr), sr=sr)
    assert a["hum"]["detected"] and a["hum"]["nominal_hz"] == 60.0


@pytest.mark.parametrize("n", [0, 1, 10, 1000, 30000])
def test_silence_and_very_short_input(n):
    for x in (np.zeros(n, np.float32), white(n, 0.01)):
        a = analyze_cleanup(x, sr=SR)
        json.dumps(a)
        assert not a["hum"]["detected"]
        assert a["clipping"]["fraction"] >= 0.0
    assert "the take is silent" in analyze_cleanup(np.zeros(n, np.float32), sr=SR)["warnings"]


def test_bad_input_raises_with_a_clear_message():
    with pytest.raises(AnalysisError, match="NaN"):
        analyze_cleanup(np.array([0.0, np.nan], np.float32), sr=SR)
    with pytest.raises(AnalysisError, match="mono"):
        analyze_cleanup(np.zeros((2, 100), np.float32), sr=SR)
    with pytest.raises(AnalysisError, match="sr=0"):
        detect_hum(np.zeros(100, np.float32), sr=0)


def test_on_corpus_scenario():
    from tools.corpus import scenarios
    sc = scenarios.make_scenario(seed=4, duration_s=8.0, sr=SR, snr_db=15.0, hum_hz=60, hum_db=-30.0,
                                 clip_fraction=0.005, backing_renderer="numpy")
    a = analyze_cleanup(sc.take, sr=SR)
    assert a["hum"]["detected"] and a["hum"]["nominal_hz"] == 60.0
    assert abs(a["hum"]["fundamental_hz"] - 60.0) < 0.05
    assert a["clipping"]["fraction"] == pytest.approx(0.005, rel=0.3)
    plain = scenarios.make_scenario(seed=4, duration_s=8.0, sr=SR, snr_db=15.0, backing_renderer="numpy")
    b = analyze_cleanup(plain.take, sr=SR)
    assert not b["hum"]["detected"] and b["clipping"]["regions"] == 0
