"""Clean-up stages: rumble, hum notches, declipper, denoiser, gate, chain from analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma.analysis.cleanup import analyze_cleanup, estimate_noise
from melisma.errors import ConfigError, RenderError
from melisma.render.clean import (
    Declipper,
    Gate,
    HumNotch,
    RumbleFilter,
    SpectralDenoiser,
    build_cleanup_chain,
    clean_take,
)
from scipy import signal

SR = 48000
GAP_S, NOTE_S = 0.6, 1.4


def sung_phrases(sr: int = SR, *, f0s=(220.0, 330.0, 262.0), peak: float = 0.3, seed: int = 0):
    """Harmonic vowels with vibrato and a 0.4 s decaying tail, separated by gaps; returns (audio, f0 per sample)."""
    rng = np.random.default_rng(seed)
    parts, f0_parts = [], []
    for f0 in f0s:
        parts.append(np.zeros(int(GAP_S * sr)))
        f0_parts.append(np.zeros(int(GAP_S * sr)))
        t = np.arange(int(NOTE_S * sr)) / sr
        f = f0 * 2 ** (0.5 / 12 * np.sin(2 * np.pi * (5.5 + rng.uniform(-0.3, 0.3)) * t))
        phase = 2 * np.pi * np.cumsum(f) / sr
        y = sum(np.sin(k * phase) / k for k in range(1, 25) if k * f0 * 1.1 < sr / 2)
        env = np.minimum(1.0, t / 0.03) * np.where(t > NOTE_S - 0.4, np.exp(-(t - (NOTE_S - 0.4)) * 10), 1.0)
        parts.append(y * env)
        f0_parts.append(f)
    parts.append(np.zeros(int(GAP_S * sr)))
    f0_parts.append(np.zeros(int(GAP_S * sr)))
    x = np.concatenate(parts)
    return (peak * x / np.max(np.abs(x))).astype(np.float32), np.concatenate(f0_parts)


def note_slices(sr: int = SR):
    """(body, tail) sample ranges of each note."""
    out = []
    for i in range(3):
        start = int((GAP_S + i * (GAP_S + NOTE_S)) * sr)
        out.append((slice(start + int(0.1 * sr), start + int((NOTE_S - 0.4) * sr)),
                    slice(start + int((NOTE_S - 0.4) * sr), start + int((NOTE_S - 0.1) * sr))))
    return out


def gap_slices(sr: int = SR):
    return [slice(int((i * (GAP_S + NOTE_S) + 0.25) * sr), int((i * (GAP_S + NOTE_S) + GAP_S - 0.05) * sr)) for i in range(4)]


def power_db(x) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def kept_db(y, truth) -> float:
    """Level of the truth component in y (projection), dB: 0 = kept exactly."""
    y, truth = np.asarray(y, np.float64), np.asarray(truth, np.float64)
    return float(20 * np.log10(np.dot(y, truth) / np.dot(truth, truth)))


def band_power_db(x, sr, lo, hi) -> float:
    f, p = signal.welch(x, fs=sr, nperseg=8192)
    return float(10 * np.log10(np.sum(p[(f >= lo) & (f <= hi)]) + 1e-30))


def white(n: int, level: float, seed: int = 1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def hum(n: int, hum_hz: float, level: float, sr: int = SR, harmonics=(1, 2, 3, 5, 7)) -> np.ndarray:
    t = np.arange(n) / sr
    return sum(level / k * np.sin(2 * np.pi * k * hum_hz * t + k) for k in harmonics).astype(np.float32)


# ------------------------------------------------------------------------------- rumble, hum


def test_rumble_filter_removes_rumble_and_keeps_the_voice():
    voice, _ = sung_phrases()
    t = np.arange(voice.size) / SR
    rumble = (0.1 * np.sin(2 * np.pi * 20 * t) + 0.05 * np.sin(2 * np.pi * 30 * t)).astype(np.float32)
    stage = RumbleFilter(cutoff_hz=70.0)
    settle = slice(SR // 2, None)
    # 24 dB/octave: 20 Hz down 43 dB, 30 Hz down 29 dB (linear filter: the parts separate)
    assert power_db(stage(rumble, SR)[settle]) < power_db(rumble[settle]) - 30
    assert abs(band_power_db(stage(voice, SR), SR, 150, 8000) - band_power_db(voice, SR, 150, 8000)) < 0.2


@pytest.mark.parametrize("hum_hz", [50.0, 59.97])
def test_hum_notch_cuts_hum_20_db_and_leaves_the_voice(hum_hz):
    voice, _ = sung_phrases(f0s=(196.0, 247.0, 165.0))
    buzz = hum(voice.size, hum_hz, 0.01)
    stage = HumNotch(fundamental_hz=hum_hz, n_harmonics=7)
    settle = slice(SR, None)  # let the narrow notches ring in
    out = stage(buzz, SR)[settle]
    for k in (1, 2, 3, 5, 7):
        t = np.arange(out.size) / SR
        probe = np.exp(-2j * np.pi * k * hum_hz * t)
        before, after = abs(np.mean(buzz[settle] * probe)), abs(np.mean(out * probe))
        assert 20 * np.log10(after / before) < -20, k
    cleaned_voice = stage(voice, SR)
    assert abs(band_power_db(cleaned_voice, SR, 80, 5000) - band_power_db(voice, SR, 80, 5000)) < 1.0
    assert kept_db(cleaned_voice, voice) > -1.0


def test_clean_take_removes_detected_hum():
    voice, _ = sung_phrases(f0s=(220.0, 277.0, 330.0))  # no partial within 15 Hz of 60, 180, 300 Hz
    take = voice + hum(voice.size, 60.02, 0.01) + white(voice.size, 0.001)
    analysis = analyze_cleanup(take, sr=SR)
    cleaned, actions = clean_take(take, sr=SR, analysis=analysis)
    notch = [a for a in actions if a["action"] == "hum_notch"]
    assert notch and abs(notch[0]["fundamental_hz"] - 60.02) < 0.05
    assert hum_left_db(take - voice, cleaned, 60.02, (1, 2, 3, 5, 7)) < -20


# ---------------------------------------------------------------------------------- declipper


@pytest.mark.parametrize("rail, min_gain_db", [(0.25, 6.0), (0.15, 3.0)])  # 1.7 % and 19 % of samples clipped
def test_declipper_brings_clipped_audio_closer_to_the_truth(rail, min_gain_db):
    truth, _ = sung_phrases(peak=0.3)
    clipped = np.clip(truth, -rail, rail)
    fixed = Declipper(threshold=rail)(clipped, SR)
    assert power_db(fixed - truth) < power_db(clipped - truth) - min_gain_db
    untouched = np.abs(clipped) < rail
    assert np.array_equal(fixed[untouched], clipped[untouched])


def test_declipper_finds_the_rail_itself_and_leaves_clean_audio_alone():
    truth, _ = sung_phrases(peak=0.3)
    assert np.array_equal(Declipper()(truth, SR), truth)
    clipped = np.clip(truth, -0.22, 0.22)
    assert power_db(Declipper()(clipped, SR) - truth) < power_db(clipped - truth) - 6


# ----------------------------------------------------------------------------------- denoiser


def f0_track(x, sr=SR):
    pyworld = pytest.importorskip("pyworld")
    x16 = signal.resample_poly(x.astype(np.float64), 1, sr // 16000)
    f0, t = pyworld.dio(x16, 16000, frame_period=10.0, f0_floor=80.0, f0_ceil=800.0)
    return pyworld.stonemask(x16, f0, t, 16000)


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0])
def test_denoiser_raises_snr_and_keeps_vowels_tails_and_f0(snr_db):
    voice, _ = sung_phrases()
    active = np.abs(voice) > 0
    sigma = np.sqrt(np.mean(voice[active].astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    noise = white(voice.size, sigma)
    take = voice + noise
    out = SpectralDenoiser(reduction_db=12.0, noise=estimate_noise(take, sr=SR)).denoise(take, SR)
    gain_in_snr = power_db(take - voice) - power_db(out - voice)
    assert gain_in_snr > 5.0
    for body, tail in note_slices():
        assert abs(kept_db(out[body], voice[body])) < 1.0  # sustained vowel
        assert abs(kept_db(out[tail], voice[tail])) < 1.5  # decaying vibrato tail
    for gap in gap_slices():
        assert power_db(out[gap]) < power_db(take[gap]) - 9
    f_voice, f_out = f0_track(voice), f0_track(out)
    voiced = (f_voice > 0) & (f_out > 0)
    assert voiced.sum() > 0.9 * (f_voice > 0).sum()
    assert np.median(np.abs(1200 * np.log2(f_out[voiced] / f_voice[voiced]))) < 5.0


def test_denoiser_on_real_voice_and_real_noise(shared_data):
    from melisma.audio_io import load_audio

    voice, _ = load_audio(shared_data / "vocadito/Audio/vocadito_1.wav", sr=SR, mono=True)
    voice = (0.5 * voice[: 12 * SR] / np.max(np.abs(voice))).astype(np.float32)
    noise, _ = load_audio(shared_data / "noise/smstools/rain.wav", sr=SR, mono=True)
    noise = np.resize(noise, voice.size)
    noise *= np.sqrt(np.mean(voice.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2) / 10)  # 10 dB
    take = voice + noise
    out = SpectralDenoiser(noise=estimate_noise(take, sr=SR)).denoise(take, SR)
    assert power_db(take - voice) - power_db(out - voice) > 3.0  # measured +4.4 dB
    assert abs(kept_db(out, voice)) < 1.0


def test_denoiser_without_noise_profile_and_streaming_state():
    voice, _ = sung_phrases()
    take = voice + white(voice.size, 0.01)
    stage = SpectralDenoiser()
    whole = stage.denoise(take, SR)
    assert power_db(whole - voice) < power_db(take - voice) - 3
    # streaming: the noise profile comes from the first block, the output is one frame late
    late = stage.latency_samples(SR)
    half = take.size // 2
    a = stage(take[:half], SR)
    b = stage(take[half:], SR, reset=False)
    assert a.shape[0] + b.shape[0] == take.size
    assert power_db(np.concatenate([a, b])[late:] - voice[:-late]) < power_db(take - voice) - 3


# --------------------------------------------------------------------------------------- gate


def test_gate_lowers_the_gaps_and_leaves_phrases():
    voice, _ = sung_phrases()
    take = voice + white(voice.size, 0.002)
    gate = Gate(threshold_db=power_db(white(SR, 0.002)) + 6, floor_db=-15.0, hold_ms=100.0, release_ms=80.0)
    out = gate.gate(take, SR)
    for gap in gap_slices()[1:]:  # from 0.25 s after a phrase (hold, then 2 release time constants)
        late = slice(gap.start + int(0.15 * SR), gap.stop)
        assert power_db(out[late]) == pytest.approx(power_db(take[late]) - 15.0, abs=1.5)
        assert power_db(out[gap]) < power_db(take[gap]) - 9
    for body, tail in note_slices():
        assert abs(kept_db(out[body], take[body])) < 0.1
        assert abs(kept_db(out[tail], take[tail])) < 0.5
    # streaming in blocks gives the same result, late by the look-ahead
    blocks = [gate(take[:SR], SR)] + [gate(take[i:i + SR], SR, reset=False) for i in range(SR, take.size, SR)]
    late = gate.latency_samples(SR)
    assert np.allclose(np.concatenate(blocks)[late:], out[:-late], atol=1e-3)


def test_gate_rejects_a_positive_floor():
    with pytest.raises(RenderError, match="floor_db"):
        Gate(floor_db=3.0)(np.zeros(100, np.float32), SR)


# ------------------------------------------------------------------------------ chain, clean_take


def test_chain_from_analysis_lists_its_actions():
    voice, _ = sung_phrases(peak=0.5)
    take = np.clip(voice + hum(voice.size, 50.0, 0.005) + white(voice.size, 0.005), -0.4, 0.4).astype(np.float32)
    analysis = analyze_cleanup(take, sr=SR)
    chain, actions = build_cleanup_chain(analysis, sr=SR)
    names = [a["action"] for a in actions]
    assert names == ["declip", "highpass", "hum_notch", "denoise", "gate"]
    assert len(chain.stages) == len(actions)
    json.dumps(actions)
    json.dumps(chain.describe())
    _, gentle = build_cleanup_chain(analysis, sr=SR, noise_reduction=0.0)
    assert [a["action"] for a in gentle] == ["declip", "highpass", "hum_notch"]
    with pytest.raises(ConfigError, match="noise_reduction"):
        build_cleanup_chain(analysis, sr=SR, noise_reduction=3.0)


def test_clean_take_improves_a_degraded_take():
    voice, _ = sung_phrases()
    take = (voice + hum(voice.size, 50.0, 0.004) + white(voice.size, 0.01)).astype(np.float32)
    cleaned, _actions = clean_take(take, sr=SR, analysis=analyze_cleanup(take, sr=SR))
    # compare against the truth through the same linear filters (high-pass, notches)
    chain, _ = build_cleanup_chain(analyze_cleanup(take, sr=SR), sr=SR, noise_reduction=0.0)
    reference = chain(voice, SR)
    assert power_db(cleaned - reference) < power_db(take - voice) - 6
    assert abs(kept_db(cleaned, reference)) < 1.0


@pytest.mark.parametrize("n", [0, 1, 50, 2000])
def test_silence_and_very_short_takes(n):
    for x in (np.zeros(n, np.float32), white(n, 0.01)):
        y, _actions = clean_take(x, sr=SR, analysis=analyze_cleanup(x, sr=SR))
        assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert not np.any(clean_take(np.zeros(n, np.float32), sr=SR, analysis=analyze_cleanup(np.zeros(n, np.float32), sr=SR))[0])


@pytest.mark.parametrize("sr", [16000, 44100])
def test_other_rates(sr):
    voice, _ = sung_phrases(sr)
    take = (voice + hum(voice.size, 60.0, 0.004, sr=sr) + white(voice.size, 0.01)).astype(np.float32)
    cleaned, actions = clean_take(take, sr=sr, analysis=analyze_cleanup(take, sr=sr))
    assert "hum_notch" in [a["action"] for a in actions]
    assert power_db(cleaned[: int(0.5 * sr)]) < power_db(take[: int(0.5 * sr)]) - 10


def test_on_corpus_scenario():
    from tools.corpus import scenarios
    sc = scenarios.make_scenario(seed=7, duration_s=8.0, sr=SR, snr_db=10.0, hum_hz=50, hum_db=-25.0,
                                 clip_fraction=0.002, mic=None, backing_renderer="numpy")
    analysis = analyze_cleanup(sc.take, sr=SR)
    cleaned, actions = clean_take(sc.take, sr=SR, analysis=analysis)
    assert {"declip", "hum_notch", "denoise", "gate"} <= {a["action"] for a in actions}
    chain, _ = build_cleanup_chain(analysis, sr=SR, noise_reduction=0.0)
    linear = [s for s in chain.stages if s.name not in ("Declipper", "ARDeclipper")]
    drive = np.float32(10 ** (sc.truth["degradations"]["clip_drive_db"] / 20))  # clipping drove the take up
    voice = sc.components["voice"] * drive
    reference = voice
    for stage in linear:
        reference = stage(reference, SR)
    gain = power_db(sc.take - voice) - power_db(cleaned - reference)
    assert gain > 5.0  # measured +8.7 dB
    assert abs(kept_db(cleaned, reference)) < 1.0
    assert hum_left_db(sc.components["hum"] * drive, cleaned, 50.0, (1, 2, 3)) < -20


def hum_left_db(hum_before, after, hum_hz, harmonics, skip_s=1.0):
    """Worst ratio, over the harmonics, of the narrow-band (demodulated) level after / before."""
    settle = slice(int(skip_s * SR), None)
    t = np.arange(hum_before[settle].size) / SR
    worst = -200.0
    for k in harmonics:
        probe = np.exp(-2j * np.pi * k * hum_hz * t)
        ratio = abs(np.mean(after[settle] * probe)) / abs(np.mean(hum_before[settle] * probe))
        worst = max(worst, 20 * np.log10(ratio))
    return worst


def test_denoiser_output_does_not_depend_on_its_block_size():
    """The denoiser writes its output over its padded input block by block (no second full-size
    buffer); the hand-over between blocks must not show: any block size gives the same audio."""
    from melisma.analysis.cleanup import estimate_noise
    from melisma.render.clean import SpectralDenoiser

    rng = np.random.default_rng(3)
    sr = 16000
    t = np.arange(3 * sr) / sr
    x = (0.2 * np.sin(2 * np.pi * 220 * t) * (t % 1 < 0.5) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    noise = estimate_noise(x, sr=sr)
    reference = SpectralDenoiser(noise=noise, block_frames=100_000)(x, sr)  # all frames in one block
    for block_frames in (1, 7, 256):
        y = SpectralDenoiser(noise=noise, block_frames=block_frames)(x, sr)
        assert y.shape == x.shape and np.abs(y - reference).max() < 1e-6
    assert np.std(reference[int(0.6 * sr):sr]) < 0.5 * np.std(x[int(0.6 * sr):sr])  # and it does denoise
