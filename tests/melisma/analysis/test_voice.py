"""Vocal and backing analysis on synthetic signals with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma.analysis.voice import analyze_backing, analyze_voice, band_powers, long_term_psd
from melisma.errors import AnalysisError
from scipy import signal

SR = 48000


def synth_voice(*, seconds=6.0, f0=220.0, swing_db=10.0, sib_band=(6000.0, 8000.0), sib_db=-12.0, seed=0):
    """Harmonic vowels with vibrato and two formant bumps, alternating loud and quiet (``swing_db``
    apart) notes of 0.75 s, each followed by a 120 ms band-limited noise burst (an "s")."""
    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * 2 ** ((0.5 / 12) * np.sin(2 * np.pi * 5.5 * t))) / SR
    vowel = np.zeros(n)
    for k in range(1, int(0.45 * SR / f0)):
        fk = f0 * k
        amp = k**-1.2 * (1 + 2 * np.exp(-0.5 * ((fk - 700) / 300) ** 2) + np.exp(-0.5 * ((fk - 2800) / 500) ** 2))
        vowel += amp * np.sin(k * phase)
    vowel /= np.abs(vowel).max()
    noise = signal.sosfilt(signal.butter(6, sib_band, btype="bandpass", fs=SR, output="sos"), rng.standard_normal(n))
    noise /= np.sqrt(np.mean(noise**2))
    env, sib = np.zeros(n), np.zeros(n)
    vowel_mask, sib_mask, loud_mask, quiet_mask = (np.zeros(n, bool) for _ in range(4))
    note, burst, fade = int(0.75 * SR), int(0.12 * SR), int(0.02 * SR)
    for i, start in enumerate(range(0, n - SR + 1, SR)):
        gain = 10 ** ((-6.0 - (swing_db if i % 2 else 0.0)) / 20)
        shape = np.ones(note)
        shape[:fade], shape[-fade:] = np.linspace(0, 1, fade), np.linspace(1, 0, fade)
        env[start:start + note] = gain * shape
        body = slice(start + fade, start + note - fade)
        vowel_mask[body] = True
        (quiet_mask if i % 2 else loud_mask)[body] = True
        s0 = start + note + int(0.05 * SR)
        sib[s0:s0 + burst] = 10 ** (sib_db / 20) * 0.3 * np.hanning(burst) * noise[s0:s0 + burst]
        sib_mask[s0 + burst // 4:s0 + 3 * burst // 4] = True
    y = (0.5 * env * vowel + sib).astype(np.float32)
    return y, {"vowel": vowel_mask, "sibilant": sib_mask, "loud": loud_mask, "quiet": quiet_mask}


def test_result_is_json_serialisable_and_complete():
    y, _ = synth_voice(seconds=3.0)
    info = analyze_voice(y, sr=SR)
    json.dumps(info, allow_nan=False)
    for key in ("loudness_lufs", "loud_phrase_peak_db", "loud_phrase_rms_db", "loud_phrase_detector_db",
                "dynamic_range_db", "spectral_balance", "sibilance"):
        assert key in info
    assert info["loudness_lufs"] < 0


def test_a_vocal_read_in_blocks_from_a_file_backed_buffer_gives_the_same_analysis(tmp_path):
    """A long take's vocal is analysed through plain file reads of its spill buffer (never mapped in
    whole): every figure equals the in-memory analysis; a damaged buffer is refused."""
    from melisma.pipeline.spill import SpilledArray

    y, _ = synth_voice(seconds=9.3)  # not a whole number of blocks or hops
    with SpilledArray(y.shape, folder=tmp_path) as buffer:
        buffer.array[:] = y
        assert analyze_voice(buffer.reader(), sr=SR) == analyze_voice(y, sr=SR)
        buffer.array[50000] = np.nan
        with pytest.raises(AnalysisError, match="NaN"):
            analyze_voice(buffer.reader(), sr=SR)


@pytest.mark.parametrize(("band", "centre_range"), [((6000.0, 8000.0), (6000, 8000)), ((3000.0, 4000.0), (3000, 4000))])
def test_sibilance_band_is_found_per_voice(band, centre_range):
    y, _ = synth_voice(sib_band=band)
    sib = analyze_voice(y, sr=SR)["sibilance"]
    assert sib["found"]
    assert centre_range[0] <= sib["centre_hz"] <= centre_range[1]
    # The band found hugs the true band (within a third of an octave of each edge).
    assert band[0] / 1.26 <= sib["lo_hz"] <= band[0] * 1.1
    assert band[1] / 1.1 <= sib["hi_hz"] <= band[1] * 1.26
    assert sib["excess_db"] > 6.0  # esses stand well above the vowels in that band


def test_no_sibilance_in_a_pure_vowel():
    y, _ = synth_voice(sib_db=-200.0)
    assert analyze_voice(y, sr=SR)["sibilance"]["found"] is False


def test_phrase_statistics_follow_the_dynamics():
    y, masks = synth_voice(swing_db=10.0)
    info = analyze_voice(y, sr=SR)
    loud_rms = 10 * np.log10(np.mean(y[masks["loud"]].astype(np.float64) ** 2))
    assert info["loud_phrase_rms_db"] == pytest.approx(loud_rms, abs=1.5)
    assert info["dynamic_range_db"] == pytest.approx(10.0, abs=2.0)
    # Sibilant bursts are left out of the phrase levels.
    assert info["loud_phrase_peak_db"] <= 20 * np.log10(np.abs(y[masks["loud"]]).max()) + 0.5
    # The compressor detector reads between RMS and peak on a sung vowel.
    assert info["loud_phrase_rms_db"] < info["loud_phrase_detector_db"] < info["loud_phrase_peak_db"] + 0.5


def test_spectral_balance_tracks_a_low_boost():
    y, _ = synth_voice(seconds=3.0, f0=110.0)  # a low voice: harmonics at 110 and 220 Hz
    boom = signal.sosfilt(signal.butter(2, 150, btype="lowpass", fs=SR, output="sos"), y).astype(np.float32)
    plain = analyze_voice(y, sr=SR)["spectral_balance"]
    boomy = analyze_voice(y + 3 * boom, sr=SR)["spectral_balance"]
    # Shares are relative to the total, so compare the low band with the untouched mid band:
    # the 150 Hz low-pass x3 adds about +12 dB at 110 Hz and little at 0.5-2 kHz.
    assert boomy["low"] - boomy["mid"] > plain["low"] - plain["mid"] + 6
    assert boomy["presence"] < plain["presence"] - 1


def test_band_powers_conserve_energy():
    rng = np.random.default_rng(1)
    y = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    powers, edges, _hop = band_powers(y, sr=SR)
    # White noise: band power is proportional to bandwidth, summing to the signal's mean square.
    assert powers.sum(axis=1).mean() == pytest.approx(0.01 * (edges[-1] - edges[0]) / (SR / 2), rel=0.1)


def test_backing_tempo_width_and_loudness():
    rng = np.random.default_rng(2)
    n = 8 * SR
    beat = int(SR * 60 / 100)  # 100 BPM
    clicks = np.zeros(n)
    for start in range(0, n - 2000, beat):
        clicks[start:start + 2000] += np.hanning(2000) * rng.standard_normal(2000)
    pad = 0.05 * signal.sosfilt(signal.butter(2, 1000, fs=SR, output="sos"), rng.standard_normal((2, n)))
    stereo = (0.3 * clicks[None, :] + pad).astype(np.float32)
    info = analyze_backing(stereo, sr=SR)
    json.dumps(info, allow_nan=False)
    assert info["tempo_bpm"] == pytest.approx(100, rel=0.03)
    assert info["channels"] == 2 and 0.0 < info["stereo_width"] < 1.0
    assert analyze_backing(np.stack([clicks, clicks]).astype(np.float32), sr=SR)["stereo_width"] == 0.0
    assert info["loudness_lufs"] is not None


def test_bad_input_raises_analysis_error():
    y = np.zeros(SR, np.float32)
    y[10] = np.nan
    with pytest.raises(AnalysisError, match="NaN"):
        analyze_voice(y, sr=SR)
    with pytest.raises(AnalysisError, match="shape"):
        analyze_voice(np.zeros((2, 2, 2), np.float32), sr=SR)


def test_silence_and_very_short_input_do_not_crash():
    silent = analyze_voice(np.zeros(SR, np.float32), sr=SR)
    assert silent["loudness_lufs"] is None and silent["sibilance"]["found"] is False
    json.dumps(silent, allow_nan=False)
    short = analyze_voice(np.full(100, 0.1, np.float32), sr=SR)
    json.dumps(short, allow_nan=False)


def test_corpus_voice_sibilance_matches_its_truth():
    from tools.corpus import voice as corpus
    notes = [corpus.NoteSpec(62 + i % 3, 0.2 + 0.8 * i, 0.6, consonant="s" if i % 2 == 0 else None,
                             velocity=0.9 if i % 2 else 0.5) for i in range(6)]
    take = corpus.synthesize_voice(notes, sr=SR, seed=1)
    true_lo, true_hi = take.consonants[0]["band_hz"]
    sib = analyze_voice(take.audio, sr=SR)["sibilance"]
    assert sib["found"]
    assert true_lo <= sib["centre_hz"] <= true_hi
    assert true_lo / 1.26 <= sib["lo_hz"] and sib["hi_hz"] <= true_hi * 1.26


def test_loudness_is_measured_and_silence_is_none():
    y, _ = synth_voice(seconds=3.0)
    quiet = analyze_voice(0.5 * y, sr=SR)["loudness_lufs"]
    assert quiet == pytest.approx(analyze_voice(y, sr=SR)["loudness_lufs"] - 6.02, abs=0.05)
    assert analyze_voice(np.zeros(SR, np.float32), sr=SR)["loudness_lufs"] is None
    assert analyze_voice(y[: SR // 4], sr=SR)["loudness_lufs"] is None


def test_long_term_spectrum_keeps_a_bass_voice_out_of_the_rumble_band():
    y, _ = synth_voice(seconds=2.0, f0=98.0, sib_db=-200.0)
    _freqs, power = long_term_psd(y, sr=SR)
    assert power.sum() == pytest.approx(np.mean(y.astype(np.float64) ** 2), rel=0.05)
    balance = analyze_voice(y, sr=SR)["spectral_balance"]
    assert balance["rumble"] < -35.0 < balance["low"]


@pytest.mark.parametrize("seed", [1, 2])
def test_backing_tempo_of_corpus_scenarios(seed):
    import tools.corpus as corpus
    scenario = corpus.make_scenario(seed=seed, duration_s=8.0, sr=SR, backing_renderer="numpy")
    info = analyze_backing(scenario.backing, sr=SR)
    assert info["tempo_bpm"] == pytest.approx(scenario.truth["tempo_bpm"], rel=0.03)
    voice = analyze_voice(scenario.clean_vocal, sr=SR)
    json.dumps(voice, allow_nan=False)
    assert voice["loudness_lufs"] is not None
