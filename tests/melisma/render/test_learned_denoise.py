"""The learned denoiser through a real TFLite interpreter: noise down, voice kept, clear errors, clean-up fall-back."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.cleanup import analyze_cleanup
from melisma.errors import ConfigError, ModelError, RenderError
from melisma.models_runtime import RUNTIMES, TfliteModel, available_runtimes, models_dir
from melisma.render import learned_denoise as ld
from melisma.render.clean import SpectralDenoiser, build_cleanup_chain, clean_take
from melisma.render.learned_denoise import LearnedDenoiser
from scipy import signal

from tools.corpus.voice import NoteSpec, synthesize_voice

SR = 48000
MODEL = models_dir().joinpath(*ld.MODEL_FILE)


def _si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    target = ref * (np.dot(est, ref) / np.dot(ref, ref))
    return float(10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2)))


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def _sung() -> np.ndarray:
    """Two sung phrases (vibrato, a slide, breaths) with a rest between: a speech/singing-like signal."""
    vibrato = {"type": "vibrato", "rate_hz": 5.5, "extent_cents": 80.0}
    notes = [NoteSpec(midi=62, start_s=0.3, duration_s=0.9, ornaments=[vibrato]),
             NoteSpec(midi=65, start_s=1.2, duration_s=0.6, vowel="o"),
             NoteSpec(midi=60, start_s=2.6, duration_s=1.0, vowel="e",
                      ornaments=[{"type": "slide_in", "duration_ms": 150.0, "interval_cents": -200.0}])]
    take = synthesize_voice(notes, sr=SR, duration_s=4.0, voice="female", seed=3, peak=0.3)
    return take.audio.astype(np.float32)


def _nonstationary_noise(n: int, seed: int = 1) -> np.ndarray:
    """Pink-ish noise swelling and fading at ~1 Hz plus clatter (damped resonances at random times)."""
    rng = np.random.default_rng(seed)
    pink = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    t = np.arange(n) / SR
    swell = 0.25 + 0.75 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.8 * t + 1.0)) ** 2
    noise = pink / np.std(pink) * swell
    for at in rng.integers(0, n - SR // 10, 12):
        k = np.arange(SR // 10) / SR
        noise[at : at + k.size] += 3.0 * np.sin(2 * np.pi * rng.uniform(1500, 6000) * k) * np.exp(-k / 0.02)
    return (noise / np.std(noise)).astype(np.float32)


def test_committed_model_is_small_int8_and_has_the_stage_shapes():
    assert MODEL.is_file()
    assert MODEL.stat().st_size <= 200 * 1024
    model = TfliteModel(MODEL)
    assert model.is_int8
    assert model.input_shape[1:] == (ld.OUT_FRAMES + ld.CONTEXT_FRAMES - 1, ld.N_FEATURES)
    (gains,) = model.predict(np.zeros((1, *model.input_shape[1:]), np.float32) + ld.pad_features())
    assert gains.shape == (1, ld.OUT_FRAMES, 2 * ld.N_BANDS)  # band gains, then the bands' comb depths
    assert np.all((gains >= 0) & (gains <= 1))


def test_comb_lowers_the_noise_between_harmonics_and_keeps_the_harmonics():
    t = np.arange(SR) / SR
    f0 = 233.0
    voice = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 30)).astype(np.float32)
    noise = (0.05 * np.random.default_rng(2).standard_normal(SR)).astype(np.float32)
    spec_voice, spec_noise = (np.fft.rfft(np.lib.stride_tricks.sliding_window_view(x, ld.N_FFT)[:: ld.HOP] * ld._WINDOW, axis=1)
                              for x in (voice, noise))
    power = ld.frame_power(spec_voice + spec_noise)
    _, f0_pick = ld.harmonic_analysis(power)
    assert np.all(np.abs(1200 * np.log2(f0_pick / f0)) < 10)  # the comb sits on the voice's own harmonics
    ones = np.ones((power.shape[0], ld.N_BANDS), np.float32)
    full = ld.comb_gains_to_bins(ones, ones, f0_pick)
    none = ld.comb_gains_to_bins(ones, 0 * ones, f0_pick)
    assert np.allclose(none, ld.gains_to_bins(ones))  # depth 0: the band gains as they are

    def kept_db(spec, gains, below_hz=ld.COMB_TOP_HZ):
        top = int(below_hz / (SR / ld.N_FFT))
        return 10 * np.log10(np.sum(np.abs(spec[:, :top] * gains[:, :top]) ** 2) / np.sum(np.abs(spec[:, :top]) ** 2))

    assert kept_db(spec_noise, full) < -3.5  # the noise under 5 kHz loses about 4 dB (raised cosine: 3/8 of it stays)
    # the harmonics stay, but for their skirts: at 233 Hz they are 4.7 bins apart and the window spreads each
    # over about 3 (measured -0.9 dB; the model learns a depth under 1 where that costs more than it gains)
    assert kept_db(spec_voice, full) > -1.2
    assert np.allclose(full[:, ld._BIN_HZ > ld.COMB_TOP_HZ], 1.0)  # nothing above the comb's top


def _frames_power(x: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float32), ld.N_FFT)[:: ld.HOP] * ld._WINDOW
    return ld.frame_power(np.fft.rfft(frames, axis=1))


def test_harmonic_contrast_marks_the_bands_a_sung_voice_holds_and_not_noise():
    voice, noise = _sung(), _nonstationary_noise(4 * SR)
    p_voice = _frames_power(voice)
    loud = 10 * np.log10(p_voice.sum(axis=1) + 1e-20) > 10 * np.log10(p_voice.sum(axis=1).max()) - 20
    centres = ld.band_centres_hz()
    voice_bands = (centres > 250) & (centres < 4000)
    sung = ld.harmonic_contrast(p_voice)[loud][:, voice_bands]
    in_noise = ld.harmonic_contrast(_frames_power(noise))[:, voice_bands]
    assert sung.mean() > 0.6
    assert in_noise.mean() < 0.35
    # a ratio of powers: about the same 40 dB lower (the deepest dips between harmonics reach the power
    # floor), 0 in digital silence and above the contrast's top
    quieter = ld.harmonic_contrast(_frames_power(voice * 0.01))[loud][:, voice_bands]
    assert abs(quieter.mean() - sung.mean()) < 0.1
    assert not ld.harmonic_contrast(np.zeros((3, ld.N_BINS), np.float32)).any()
    assert not ld.harmonic_contrast(p_voice)[:, centres > 9000].any()
    # noise 10 dB over the voice's level still leaves the voice's bands standing out
    mixed = ld.harmonic_contrast(_frames_power(voice + noise * np.std(voice[voice != 0]) * 10 ** (-10 / 20)))
    assert mixed[loud][:, voice_bands].mean() > in_noise.mean() + 0.15


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_lowers_nonstationary_noise_and_keeps_the_voice(runtime):
    if runtime not in available_runtimes():
        wheel = "tflite-runtime" if runtime == "tflite_runtime" else "ai-edge-litert"
        pytest.skip(f"{runtime} does not import here (pip install {wheel})")
    voice = _sung()
    noise = _nonstationary_noise(voice.size)
    noise *= np.sqrt(np.mean(voice.astype(np.float64) ** 2)) / np.sqrt(np.mean(noise.astype(np.float64) ** 2)) * 10 ** (-10 / 20)
    noisy = voice + noise
    den = LearnedDenoiser(runtime=runtime)
    out = den.denoise(noisy, SR)
    assert out.shape == noisy.shape and out.dtype == np.float32
    # noise reduced by a measurable amount: the SI-SDR rises, the rest between the phrases gets much quieter
    gain = _si_sdr(out, voice) - _si_sdr(noisy, voice)
    assert gain > 3.0, gain  # measured 4.4 dB (3.4 without the comb; the spectral denoiser: 1.6 dB)
    rest = slice(int(1.95 * SR), int(2.45 * SR))
    assert _db(out[rest]) < _db(noisy[rest]) - 6.0  # measured 11.9 dB lower (spectral: 2.4 dB)
    # ... and the spectral denoiser, with the noise profile of the gaps, does less against this noise
    spectral = SpectralDenoiser(reduction_db=12.0, noise=analyze_cleanup(noisy, sr=SR)["noise"]).denoise(noisy, SR)
    assert _si_sdr(out, voice) > _si_sdr(spectral, voice) + 1.0
    # voice kept: a clean take passes nearly untouched (level within 1 dB, SI-SDR over 15 dB)
    clean_out = den.denoise(voice, SR)
    assert abs(_db(clean_out) - _db(voice)) < 1.0
    assert _si_sdr(clean_out, voice) > 15.0


def test_gain_floor_bounds_the_reduction_and_zero_passes_through():
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(2 * SR)).astype(np.float32)
    deep = LearnedDenoiser(reduction_db=30.0).denoise(noise, SR)
    shallow = LearnedDenoiser(reduction_db=6.0).denoise(noise, SR)
    assert _db(deep) < _db(noise) - 15.0
    assert _db(noise) - 6.5 < _db(shallow) < _db(noise) - 3.0
    np.testing.assert_array_equal(LearnedDenoiser(reduction_db=0.0).denoise(noise, SR), noise)


def test_stereo_channels_are_denoised_each_on_its_own():
    voice = _sung()[: 2 * SR]
    noisy = voice + 0.3 * _nonstationary_noise(voice.size) * np.float32(np.std(voice))
    den = LearnedDenoiser()
    both = den.denoise(np.stack([noisy, voice]), SR)
    np.testing.assert_array_equal(both[0], den.denoise(noisy, SR))
    np.testing.assert_array_equal(both[1], den.denoise(voice, SR))


def test_missing_damaged_and_foreign_model_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match=r"does not exist"):
        LearnedDenoiser(model_path=tmp_path / "none.tflite").load()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(MODEL.read_bytes()[: MODEL.stat().st_size // 3])
    with pytest.raises(ModelError, match=r"not a usable TFLite model"):
        LearnedDenoiser(model_path=cut).denoise(np.zeros(SR, np.float32), SR)
    pitch = models_dir() / "pitch" / "melisma_pitch_int8.tflite"
    with pytest.raises(ModelError, match=r"needs .*re-train it"):
        LearnedDenoiser(model_path=pitch).load()


def test_other_rates_and_negative_reduction_are_refused():
    with pytest.raises(RenderError, match=r"48000 Hz"):
        LearnedDenoiser().denoise(np.zeros(1600, np.float32), 16000)
    with pytest.raises(RenderError, match=r"reduction_db=-1"):
        LearnedDenoiser(reduction_db=-1.0).denoise(np.zeros(4800, np.float32), SR)


def _noisy_analysis():
    voice = _sung()[: 3 * SR]
    noisy = voice + 0.1 * _nonstationary_noise(voice.size) * np.float32(np.std(voice))
    return noisy, analyze_cleanup(noisy, sr=SR)


def test_cleanup_runs_the_learned_denoiser_when_asked():
    noisy, analysis = _noisy_analysis()
    chain, actions = build_cleanup_chain(analysis, sr=SR, denoiser="learned")
    assert [type(s).__name__ for s in chain.stages if "Denoiser" in type(s).__name__] == ["LearnedDenoiser"]
    act = next(a for a in actions if a["action"] == "learned_denoise")
    assert act["model"] == MODEL.name and act["reduction_db"] == 30.0
    assert not any(a["action"] == "denoise" for a in actions)
    chain, actions = build_cleanup_chain(analysis, sr=SR, denoiser="hybrid")
    assert [type(s).__name__ for s in chain.stages if "Denoiser" in type(s).__name__] == ["SpectralDenoiser", "LearnedDenoiser"]
    assert [a["action"] for a in actions if "denoise" in a["action"]] == ["denoise", "learned_denoise"]
    spectral_only, _ = clean_take(noisy, sr=SR, analysis=analysis, denoiser="spectral")
    for mode in ("learned", "hybrid"):
        cleaned, _ = clean_take(noisy, sr=SR, analysis=analysis, denoiser=mode)
        assert cleaned.shape == noisy.shape and np.all(np.isfinite(cleaned))
        assert not np.allclose(cleaned, spectral_only, atol=1e-3)
    with pytest.raises(ConfigError, match=r"denoiser='neural' is unknown"):
        build_cleanup_chain(analysis, sr=SR, denoiser="neural")


def test_cleanup_falls_back_to_the_spectral_denoiser_and_says_why(tmp_path, monkeypatch):
    _, analysis = _noisy_analysis()
    monkeypatch.setenv("MELISMA_MODELS_DIR", str(tmp_path))  # no models there
    for mode in ("learned", "hybrid"):
        chain, actions = build_cleanup_chain(analysis, sr=SR, denoiser=mode)
        assert any(isinstance(s, SpectralDenoiser) for s in chain.stages)
        assert not any(isinstance(s, LearnedDenoiser) for s in chain.stages)
        assert not any(a["action"] == "learned_denoise" for a in actions)
        act = next(a for a in actions if a["action"] == "denoise")
        assert act["method"] == "spectral" and "does not exist" in act["fallback"] and str(tmp_path) in act["fallback"]
    # damaged file: the same fall-back, naming the damage
    (tmp_path / "denoise").mkdir()
    (tmp_path / "denoise" / ld.MODEL_FILE[1]).write_bytes(b"garbage" * 10)
    _, actions = build_cleanup_chain(analysis, sr=SR, denoiser="learned")
    assert "not a usable TFLite model" in next(a for a in actions if a["action"] == "denoise")["fallback"]
    # another rate: the spectral denoiser, with the reason
    _, actions = build_cleanup_chain(analysis, sr=44100, denoiser="learned")
    assert "48000 Hz" in next(a for a in actions if a["action"] == "denoise")["fallback"]


def _harmonic_in_noise(n_frames: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bin powers of frames with harmonics of 220 Hz (every ~4.4 bins) over flat noise, and the ideal band gains."""
    rng = np.random.default_rng(seed)
    freqs = np.fft.rfftfreq(ld.N_FFT, 1.0 / SR)
    voice = np.zeros(freqs.size)
    for h in range(1, 20):
        voice[np.argmin(np.abs(freqs - 220.0 * h))] = 1e-2 / h
    noise = 1e-4 * rng.exponential(1.0, (n_frames, freqs.size))
    power = (voice + noise).astype(np.float32)
    w = ld.band_weights()
    ideal = np.sqrt(np.minimum((voice @ w.T) / (power @ w.T), 1.0)).astype(np.float32)
    return power, ideal


def test_refined_gains_put_the_band_gain_on_the_harmonics():
    power, ideal = _harmonic_in_noise()
    plain = ld.gains_to_bins(ideal)
    freqs = np.fft.rfftfreq(ld.N_FFT, 1.0 / SR)
    harmonic = np.zeros(freqs.size, bool)
    for h in range(1, 20):
        harmonic[np.argmin(np.abs(freqs - 220.0 * h))] = True
    between = (~harmonic) & (freqs > 150) & (freqs < 4000)
    refined = {}
    for mode in ("shaped", "blend", "wiener"):
        g = refined[mode] = ld.refine_gains(power, ideal, ld.RefineState(), mode=mode)[-1]
        assert g.shape == (ld.N_BINS,) and np.all((g >= 0) & (g <= 1))
        assert np.mean(g[harmonic & (freqs < 4000)]) > 0.8, mode
    # the noise between the harmonics is lowered far more than the band gains alone would ...
    for mode in ("shaped", "wiener"):
        assert np.mean(refined[mode][between]) < 0.5 * np.mean(plain[-1][between]), mode
    # ... and "blend" goes part of the way, more where the band holds more noise
    assert np.mean(refined["shaped"][between]) < np.mean(refined["blend"][between]) < np.mean(plain[-1][between]) - 0.05
    # "shaped" keeps each band's energy as its band gain says (within 1 dB in the voiced bands)
    g = ld.refine_gains(power, ideal, ld.RefineState(), mode="shaped")[-1]
    w = ld.band_weights()
    kept, want = (g**2 * power[-1]) @ w.T, (ideal[-1] ** 2) * (power[-1] @ w.T)
    voiced = (ideal[-1] > 0.5) & (ld.band_centres_hz() < 4000)
    assert voiced.sum() >= 5
    np.testing.assert_allclose(10 * np.log10(kept[voiced] / want[voiced]), 0.0, atol=1.0)
    with pytest.raises(RenderError, match="'shaped'"):
        ld.refine_gains(power, ideal, ld.RefineState(), mode="comb")


@pytest.mark.parametrize("refine", [m for m in ld.REFINE_MODES if m != LearnedDenoiser().refine])  # default: stage contract
def test_every_refinement_streams_exactly_and_lowers_the_noise(refine):
    voice = _sung()[: 2 * SR]
    noise = _nonstationary_noise(voice.size)
    noisy = voice + noise * np.float32(np.std(voice) / np.std(noise) * 10 ** (-10 / 20))
    den = LearnedDenoiser(refine=refine)
    whole = den.denoise(noisy, SR)
    assert _si_sdr(whole, voice) - _si_sdr(noisy, voice) > 2.0
    padded = np.concatenate([noisy, np.zeros(den.latency_samples(SR), np.float32)])
    den.reset()
    parts, at = [], 0
    for size in [1, 479, 480, 481, 5000, 960, 31, 20000] * 10:
        parts.append(den(padded[at : at + size], SR, reset=False))
        at += size
        if at >= padded.size:
            break
    parts.append(den(padded[at:], SR, reset=False))
    streamed = np.concatenate(parts)[den.latency_samples(SR) :]
    np.testing.assert_array_equal(streamed, whole)


def test_unknown_refinement_is_refused():
    with pytest.raises(RenderError, match="refine='comb'"):
        LearnedDenoiser(refine="comb").denoise(np.zeros(SR, np.float32), SR)


def test_auto_runs_the_hybrid_on_noisy_takes_and_the_spectral_denoiser_on_clean_ones():
    from melisma.render.clean import AUTO_HYBRID_BELOW_SNR_DB

    voice = _sung()
    noise = _nonstationary_noise(voice.size)
    for snr, want in ((8.0, ["SpectralDenoiser", "LearnedDenoiser"]), (30.0, ["SpectralDenoiser"])):
        noisy = voice + noise * np.float32(np.std(voice) / np.std(noise) * 10 ** (-snr / 20))
        analysis = analyze_cleanup(noisy, sr=SR)
        measured = analysis["noise"]["snr_db"]
        assert (measured < AUTO_HYBRID_BELOW_SNR_DB) == (snr < 20), measured
        chain, actions = build_cleanup_chain(analysis, sr=SR, denoiser="auto")
        assert [type(s).__name__ for s in chain.stages if "Denoiser" in type(s).__name__] == want
        first = next(a for a in actions if a["action"] == "denoise")
        assert first["auto"].startswith("hybrid" if len(want) == 2 else "spectral") and f"{measured}" in first["auto"]
        cleaned, _ = clean_take(noisy, sr=SR, analysis=analysis, denoiser="auto")
        same, _ = clean_take(noisy, sr=SR, analysis=analysis, denoiser="hybrid" if len(want) == 2 else "spectral")
        np.testing.assert_array_equal(cleaned, same)
