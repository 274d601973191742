"""Tests for the synthetic corpus generator (tools/corpus): the truth must match the audio."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal
from scipy.signal import correlate

from tools.corpus import (
    CorpusError,
    Key,
    NoteSpec,
    apply_offset,
    clip,
    fluidsynth_available,
    generate_melody,
    hz_to_midi,
    make_backing,
    make_backing_midi,
    make_scenario,
    render_midi,
    synthesize_voice,
    write_scenario,
)
from tools.corpus.degrade import codec_delay_samples, make_noise

SR = 16000  # most checks run at 16 kHz to stay fast; 48 kHz where the rate matters


def acf_f0(y: np.ndarray, sr: int, *, centre_s: float, win_s: float = 0.04, fmin: float = 70.0, fmax: float = 1000.0) -> float:
    """A plain autocorrelation f0 estimate with parabolic peak interpolation (independent of the synth)."""
    a = int(round((centre_s - win_s / 2) * sr))
    x = y[a : a + int(win_s * sr)].astype(np.float64)
    x = (x - x.mean()) * np.hanning(x.size)
    r = np.correlate(x, x, mode="full")[x.size - 1 :]
    r /= np.correlate(np.hanning(x.size), np.hanning(x.size), mode="full")[x.size - 1 :] + 1e-12  # unbias
    lo, hi = int(sr / fmax), int(sr / fmin)
    k = lo + int(np.argmax(r[lo:hi]))
    # the first peak close to the maximum avoids octave errors at a multiple of the period
    for cand in range(lo, hi):
        if r[cand] > 0.9 * r[k] and r[cand] >= r[cand - 1] and r[cand] >= r[cand + 1]:
            k = cand
            break
    d = 0.5 * (r[k - 1] - r[k + 1]) / (r[k - 1] - 2 * r[k] + r[k + 1])
    return sr / (k + d)


def cents(a, b):
    return 1200.0 * np.log2(np.asarray(a, dtype=float) / np.asarray(b, dtype=float))


def truth_mean_f0(take, centre_s: float, win_s: float = 0.04) -> float:
    t = take.times_s
    sel = (t >= centre_s - win_s / 2) & (t <= centre_s + win_s / 2)
    return float(np.exp(np.mean(np.log(take.f0_hz[sel]))))


@pytest.mark.parametrize("voice,midi,sr", [("female", 69.3, SR), ("male", 50.0, 48000), ("child", 76.0, 22050)])
def test_steady_note_f0_truth_matches_the_audio(voice, midi, sr):
    take = synthesize_voice([NoteSpec(midi=midi, start_s=0.1, duration_s=1.2, vowel="o")], sr=sr, voice=voice, seed=4)
    assert take.audio.dtype == np.float32 and np.isfinite(take.audio).all()
    errors = []
    for centre in np.arange(0.35, 1.2, 0.1):
        est = acf_f0(take.audio, sr, centre_s=centre)
        errors.append(cents(est, truth_mean_f0(take, centre)))
        # the truth itself sits on the intended note (jitter is only a few cents)
        assert abs(hz_to_midi(truth_mean_f0(take, centre)) - midi) < 0.08
    assert np.median(np.abs(errors)) < 3.0, errors
    assert take.notes[0]["midi"] == pytest.approx(midi)
    # unvoiced before and after the note
    assert take.f0_hz[take.times_s < 0.09].max() == 0 and take.f0_hz[take.times_s > 1.31].max() == 0


def _vibrato_params(f0_hz: np.ndarray, hop_s: float) -> tuple[float, float]:
    """Rate (Hz) from upward zero crossings and peak-to-peak extent (cents) over whole cycles."""
    c = cents(f0_hz, np.exp(np.mean(np.log(f0_hz))))
    x = np.arange(c.size)
    c = c - np.polyval(np.polyfit(x, c, 2), x)  # remove slow centre motion
    up = np.flatnonzero((c[:-1] < 0) & (c[1:] >= 0))
    rate = (len(up) - 1) / ((up[-1] - up[0]) * hop_s)
    # a sinusoid's peak-to-peak swing is 2*sqrt(2) times its RMS (robust to the small jitter)
    whole_cycles = c[up[0] : up[-1]]
    return rate, float(2.0 * np.sqrt(2.0) * np.sqrt(np.mean(whole_cycles**2)))


@pytest.mark.parametrize("rate_hz,extent_cents", [(5.6, 80.0), (6.5, 150.0), (7.8, 200.0)])
def test_vibrato_truth_matches_the_curve_and_the_audio(rate_hz, extent_cents):
    note = NoteSpec(midi=64, start_s=0.1, duration_s=2.2, ornaments=[
        {"type": "vibrato", "rate_hz": rate_hz, "extent_cents": extent_cents, "onset_ms": 100.0, "fade_in_ms": 150.0}])
    take = synthesize_voice([note], sr=SR, voice="female", seed=7)
    (vib,) = [o for o in take.ornaments if o["type"] == "vibrato"]
    assert vib["params"]["rate_hz"] == rate_hz and vib["params"]["extent_cents"] == extent_cents
    assert vib["start_s"] == pytest.approx(0.2)
    t = take.times_s
    sel = (t > 0.6) & (t < 2.2)
    rate, extent = _vibrato_params(take.f0_hz[sel], take.hop_s)
    assert rate == pytest.approx(rate_hz, rel=0.05)
    assert extent == pytest.approx(extent_cents, rel=0.12)
    # the audio follows the truth curve frame by frame
    est = np.array([acf_f0(take.audio, SR, centre_s=c, win_s=0.02) for c in np.arange(0.6, 2.2, 0.02)])
    ref = np.array([truth_mean_f0(take, c, win_s=0.02) for c in np.arange(0.6, 2.2, 0.02)])
    assert np.median(np.abs(cents(est, ref))) < 12.0  # a 20 ms ACF lags a little on the steepest sweeps
    rate_a, extent_a = _vibrato_params(np.repeat(est, 4), 0.005)  # 20 ms frames on the 5 ms grid
    assert rate_a == pytest.approx(rate_hz, rel=0.08)
    assert extent_a == pytest.approx(extent_cents, rel=0.25)


def test_ornament_shapes_in_the_truth():
    notes = [
        NoteSpec(60, 0.1, 0.6, ornaments=[{"type": "slide_in", "duration_ms": 200.0, "interval_cents": -250.0}]),
        NoteSpec(62, 0.7, 0.6, ornaments=[{"type": "portamento", "duration_ms": 160.0, "shape": "linear"}]),
        NoteSpec(
            65, 1.3, 0.6, detune_cents=-40.0, ornaments=[{"type": "slide_out", "duration_ms": 200.0, "interval_cents": -300.0}]
        ),
        NoteSpec(67, 2.1, 0.6, ornaments=[{"type": "grace", "duration_ms": 100.0, "interval_cents": 200.0}]),
        NoteSpec(64, 2.8, 0.8, ornaments=[{"type": "trill", "rate_hz": 6.0, "interval_cents": 100.0}]),
        NoteSpec(
            62,
            3.7,
            0.5,
            ornaments=[{"type": "mordent", "rate_hz": 8.0, "interval_cents": -200.0}, {"type": "drift", "drift_cents": 40.0}],
        ),
    ]
    take = synthesize_voice(notes, sr=SR, voice="female", seed=1)
    midi = np.where(take.f0_hz > 0, hz_to_midi(np.maximum(take.f0_hz, 1.0)), np.nan)

    def at(t):
        return float(midi[int(round(t / take.hop_s))])

    tol = 0.08  # semitones (jitter)
    assert at(0.1) == pytest.approx(60 - 2.5, abs=tol)  # slide starts 250 cents below
    assert at(0.4) == pytest.approx(60, abs=tol)
    assert at(1.3) == pytest.approx(62 + 2.6 / 2, abs=tol)  # portamento midpoint (linear) sits halfway to 64.6
    assert at(1.5) == pytest.approx(64.6, abs=tol)  # detuned centre
    assert at(1.895) == pytest.approx(64.6 - 3.0, abs=0.15)  # fallen off by the end
    assert at(2.14) == pytest.approx(69, abs=tol)  # grace note 200 cents above
    assert at(2.4) == pytest.approx(67, abs=tol)
    trill = [at(t) for t in np.arange(2.8, 3.6, 0.005)]
    assert max(trill) == pytest.approx(65, abs=tol) and min(trill) == pytest.approx(64, abs=tol)
    assert at(3.7 + 0.0625) == pytest.approx(62 - 2.0 - 0.2 + 0.0625 / 0.5 * 0.4, abs=tol)  # mordent dips (with drift)
    kinds = [o["type"] for o in take.ornaments]
    assert sorted(kinds) == sorted(["slide_in", "portamento", "slide_out", "grace", "trill", "mordent", "drift"])
    porta = next(o for o in take.ornaments if o["type"] == "portamento")
    assert porta["params"]["interval_cents"] == pytest.approx(260.0) and porta["params"]["to_note"] == 2
    assert porta["start_s"] == pytest.approx(1.22) and porta["end_s"] == pytest.approx(1.38)


def test_bad_notes_are_refused_with_a_clear_message():
    with pytest.raises(CorpusError, match="vibrato"):
        synthesize_voice([NoteSpec(60, 0, 0.5, ornaments=[{"type": "vibrato", "depth": 3}])], sr=SR)
    with pytest.raises(CorpusError, match="portamento"):
        synthesize_voice([NoteSpec(60, 0, 0.5, ornaments=[{"type": "portamento"}]), NoteSpec(62, 0.7, 0.5)], sr=SR)
    with pytest.raises(CorpusError, match="mode"):
        Key.parse("C lydian")


def _env_db(y, sr, hop_s=0.005, win_s=0.01):
    w, h = int(win_s * sr), int(hop_s * sr)
    frames = np.lib.stride_tricks.sliding_window_view(y.astype(np.float64), w)[::h]
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def test_phrase_end_release_length_and_breath_are_settable():
    note = NoteSpec(60, 0.2, 0.8, vowel="a", consonant=None)
    kw = dict(sr=SR, voice="female", seed=3, breaths=False)
    short = synthesize_voice([note], release_ms=30.0, **kw)
    long = synthesize_voice([note], release_ms=200.0, **kw)
    default = synthesize_voice([note], **kw)
    np.testing.assert_array_equal(default.f0_hz, long.f0_hz)  # the fade is in the level, not the truth
    end = int(1.0 * SR)
    # 100 ms before the note ends the short fade has not started; the long one is under way
    t = end - int(0.1 * SR)
    e_short, e_long = _env_db(short.audio, SR), _env_db(long.audio, SR)
    i = t // int(0.005 * SR)
    assert e_short[i] - e_long[i] > 3.0
    # a breathy release: the same take with more noise above 2 kHz in the last 40 ms of the note
    # (the aspiration), none added in the middle of the note
    breathy = synthesize_voice([note], release_ms=200.0, release_breath_db=30.0, **kw)
    sos = signal.butter(4, 2000, "highpass", fs=SR, output="sos")

    def hf_db(y, part):
        return 10 * np.log10(np.mean(signal.sosfilt(sos, y)[part] ** 2))

    tail, body = slice(end - int(0.04 * SR), end), slice(int(0.4 * SR), int(0.6 * SR))
    assert hf_db(breathy.audio, tail) - hf_db(long.audio, tail) > 6.0
    assert abs(hf_db(breathy.audio, body) - hf_db(long.audio, body)) < 0.5


@pytest.mark.parametrize(
    "kw",
    [
        {"release_ms": 0.0},
        {"release_ms": (30.0, 5000.0)},
        {"legato_dip": 1.5},
        {"release_breath_db": -3.0},
        {"legato_dip": (0.1, 0.2, 0.3)},
    ],
)
def test_bad_envelope_settings_are_refused(kw):
    with pytest.raises(CorpusError, match=next(iter(kw))):
        synthesize_voice([NoteSpec(60, 0.1, 0.5)], sr=SR, **kw)


def test_legato_dip_depth_and_ranges_drawn_per_seed():
    notes = [NoteSpec(60, 0.2, 0.5, vowel="a", consonant=None), NoteSpec(62, 0.7, 0.5, vowel="a", consonant=None)]
    kw = dict(sr=SR, voice="male", seed=5, breaths=False)
    shallow = _env_db(synthesize_voice(notes, legato_dip=0.9, **kw).audio, SR)
    deep = _env_db(synthesize_voice(notes, legato_dip=0.1, **kw).audio, SR)
    at = int(0.7 / 0.005)  # the boundary between the syllables
    assert shallow[at - 4 : at + 4].min() - deep[at - 4 : at + 4].min() > 10.0
    # a range is drawn from the seed: reproducible, and a draw rather than a fixed value; the
    # rest of the take (pitch, jitter, phases) does not change with it
    a = synthesize_voice(notes, release_ms=(30.0, 200.0), legato_dip=(0.1, 0.9), **kw)
    b = synthesize_voice(notes, release_ms=(30.0, 200.0), legato_dip=(0.1, 0.9), **kw)
    fixed = synthesize_voice(notes, **kw)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.array_equal(a.audio, fixed.audio)
    np.testing.assert_array_equal(a.f0_hz, fixed.f0_hz)
    body = slice(int(0.3 * SR), int(0.6 * SR))  # the first note's steady middle
    np.testing.assert_allclose(a.audio[body], fixed.audio[body], rtol=0, atol=1e-3)


def test_sibilant_consonant_has_high_frequency_energy():
    take = synthesize_voice([NoteSpec(62, 0.3, 0.6, vowel="a", consonant="s")], sr=48000, voice="male", seed=2)
    (cons,) = take.consonants
    assert cons["type"] == "s" and cons["end_s"] == pytest.approx(0.3)
    y = take.audio

    def band_ratio(a_s, b_s):
        seg = y[int(a_s * 48000) : int(b_s * 48000)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size))) ** 2
        f = np.fft.rfftfreq(seg.size, 1 / 48000)
        return spec[(f > 4000) & (f < 9000)].sum() / spec.sum()

    assert band_ratio(cons["start_s"] + 0.02, cons["end_s"] - 0.02) > 0.7
    assert band_ratio(0.5, 0.8) < 0.05
    assert take.f0_hz[int(0.25 / take.hop_s)] == 0  # the consonant is unvoiced


def test_melody_stays_in_key_for_every_mode():
    for mode in ("major", "minor", "gong", "shang", "jue", "zhi", "yu"):
        key = Key.parse(f"D {mode}")
        melody = generate_melody(key, tempo_bpm=100, duration_s=10.0, seed=3, voice="male")
        assert len(melody.notes) >= 5
        assert {round(n.midi) % 12 for n in melody.notes} <= set(key.pitch_classes())
        assert all(48 <= n.midi <= 67 for n in melody.notes)
        assert all(b.start_s >= a.end_s - 1e-9 for a, b in zip(melody.notes, melody.notes[1:], strict=False))
        assert melody.chords[-1][0] == key.tonic or mode not in ("major", "minor")
    assert Key.parse("D shang").pitch_classes() == [2, 4, 7, 9, 0]  # D E G A C: gong is C
    assert Key.parse("A yu").pitch_classes() == [9, 0, 2, 4, 7]


def _lag(ref: np.ndarray, y: np.ndarray) -> int:
    cc = correlate(y.astype(np.float64), ref.astype(np.float64), mode="full", method="fft")
    return int(np.argmax(cc) - (ref.size - 1))


@pytest.mark.parametrize(
    "offset_ms,kw",
    [
        (180.0, {"mic": None}),
        (-75.5, {"mic": None}),
        (180.0, {"bleed_db": -10.0, "aac_kbps": 64}),  # phone mic, speaker bleed and AAC: still exact
    ],
)
def test_offset_is_applied_exactly(offset_ms, kw):
    sc = make_scenario(seed=11, duration_s=6.0, sr=SR, offset_ms=offset_ms, backing_renderer="numpy", **kw)
    expected = int(round(offset_ms * SR / 1000))
    assert sc.truth["offset_samples"] == expected
    assert sc.truth["offset_ms"] == pytest.approx(expected / SR * 1000)
    assert _lag(sc.clean_vocal, sc.take) == expected
    if "bleed_db" in kw:
        # the bleed moves with the voice: it lines up with the backing at the same offset
        assert _lag(sc.backing.mean(axis=0), sc.components["bleed"]) == expected
        v, b = np.mean(sc.components["voice"] ** 2), np.mean(sc.components["bleed"] ** 2)
        assert 10 * np.log10(b / v) == pytest.approx(-10.0, abs=0.2)  # set before the shift cut the ends


def test_written_files_decode_on_the_truth_timeline(tmp_path):
    sc = make_scenario(seed=12, duration_s=4.0, sr=SR, offset_ms=50.0, aac_kbps=64, backing_renderer="numpy")
    paths = write_scenario(sc, tmp_path, include_clean=True)
    from melisma.audio_io import load_audio

    take, sr = load_audio(paths["take"], mono=True)
    backing, _ = load_audio(paths["backing"])
    assert sr == SR and backing.shape[0] == 2
    assert take.size == sc.take.size and backing.shape[1] == sc.backing.shape[1]  # no priming, no padding
    assert _lag(sc.take, take[: sc.take.size]) == 0
    assert _lag(sc.backing[0], backing[0, : sc.backing.shape[1]]) == 0
    assert _lag(sc.clean_vocal, take[: sc.take.size]) == sc.truth["offset_samples"]
    import json

    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["offset_ms"] == pytest.approx(50.0) and truth["files"]["take"] == "take.m4a"
    assert len(truth["f0"]["f0_hz"]) == len(sc.f0_hz)
    import mido

    melody = mido.MidiFile(paths["melody"])
    pitches = [m.note for m in melody if m.type == "note_on" and m.velocity > 0]
    assert pitches == [round(n["target_midi"]) for n in truth["notes"]]
    # the AAC priming is signalled and honoured: the files line up with no hand compensation
    assert codec_delay_samples(".m4a", SR, 64000) == 0
    assert truth["offset_samples"] == sc.truth["offset_samples"]


@pytest.mark.parametrize("noise", ["pink", "babble", "fan", "white"])
def test_snr_is_as_requested(noise):
    kw = dict(seed=13, duration_s=4.0, sr=SR, mic=None, backing_renderer="numpy", offset_ms=30.0)
    dry = make_scenario(**kw)
    noisy = make_scenario(snr_db=12.0, noise=noise, **kw)
    voice = apply_offset(dry.clean_vocal, SR, offset_ms=30.0)
    added = noisy.take - dry.take
    snr = 10 * np.log10(np.mean(voice.astype(float) ** 2) / np.mean(added.astype(float) ** 2))
    assert snr == pytest.approx(12.0, abs=1.0)


def test_noise_from_a_real_file(shared_data):
    files = sorted((shared_data / "noise").rglob("*.wav")) + sorted((shared_data / "noise").rglob("*.flac"))
    if not files:
        pytest.skip("no noise files")
    sc = make_scenario(seed=14, duration_s=4.0, sr=SR, snr_db=6.0, noise=files[0], mic=None, backing_renderer="numpy")
    snr = 10 * np.log10(np.mean(sc.components["voice"] ** 2) / np.mean(sc.components["noise"] ** 2))
    assert snr == pytest.approx(6.0, abs=1.0)
    assert sc.truth["degradations"]["noise"] == str(files[0])


@pytest.mark.parametrize("hum_hz", [50, 60])
def test_hum_is_at_the_mains_frequency(hum_hz):
    sc = make_scenario(seed=15, duration_s=4.0, sr=SR, hum_hz=hum_hz, hum_db=-20.0, backing_renderer="numpy")
    y = sc.take.astype(np.float64)
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    f = np.fft.rfftfreq(y.size, 1 / SR)
    low = (f > 30) & (f < 80)
    peak_hz = f[low][np.argmax(spec[low])]
    assert peak_hz == pytest.approx(hum_hz, abs=0.5)
    other = 60 if hum_hz == 50 else 50
    assert spec[np.argmin(abs(f - hum_hz))] > 30 * spec[np.argmin(abs(f - other))]
    hum = sc.components["hum"]
    assert 10 * np.log10(np.mean(hum**2) / np.mean(sc.components["voice"] ** 2)) == pytest.approx(-20.0, abs=0.01)


def test_clip_fraction():
    sc = make_scenario(seed=16, duration_s=4.0, sr=SR, clip_fraction=0.01, mic=None, backing_renderer="numpy")
    clipped = np.mean(np.abs(sc.take) >= 0.9999)
    assert clipped == pytest.approx(0.01, abs=0.001)
    assert np.abs(sc.take).max() <= 1.0 and sc.truth["degradations"]["clip_drive_db"] > 0
    y, _drive_db = clip(np.linspace(-0.5, 0.5, 1001, dtype=np.float32), fraction=0.1)
    assert np.mean(np.abs(y) >= 0.9999) == pytest.approx(0.1, abs=0.003)


def test_reverb_keeps_the_timeline_and_the_level():
    sc = make_scenario(
        seed=17, duration_s=4.0, sr=SR, rir="synthetic", rt60_s=0.6, mic=None, offset_ms=100.0, backing_renderer="numpy"
    )
    assert abs(_lag(sc.clean_vocal, sc.take) - sc.truth["offset_samples"]) <= 1
    dry = apply_offset(sc.clean_vocal, SR, offset_ms=100.0)
    assert np.mean(sc.take**2) == pytest.approx(np.mean(dry**2), rel=0.01)
    assert not np.allclose(sc.take, dry, atol=1e-3)


def test_reverb_from_a_measured_rir(shared_data):
    rirs = sorted((shared_data / "rirs").rglob("*.wav"))
    if not rirs:
        pytest.skip("no RIR files")
    sc = make_scenario(seed=18, duration_s=4.0, sr=SR, rir=rirs[0], mic=None, offset_ms=40.0, backing_renderer="numpy")
    # strong early reflections may pull the correlation peak a little after the direct sound
    assert 0 <= _lag(sc.clean_vocal, sc.take) - sc.truth["offset_samples"] <= int(0.005 * SR)


def test_same_seed_same_scenario_other_seed_other_scenario():
    kw = dict(duration_s=4.0, sr=SR, offset_ms=20.0, snr_db=15.0, hum_hz=50, bleed_db=-12.0, backing_renderer="numpy")
    a, b, c = make_scenario(seed=21, **kw), make_scenario(seed=21, **kw), make_scenario(seed=22, **kw)
    assert np.array_equal(a.take, b.take) and np.array_equal(a.backing, b.backing)
    assert a.truth == b.truth
    assert not np.array_equal(a.take, c.take)
    assert np.array_equal(make_noise("babble", 1000, SR, seed=3), make_noise("babble", 1000, SR, seed=3))


def test_numpy_fallback_when_fluidsynth_is_absent():
    mid = make_backing_midi(Key.parse("E minor"), tempo_bpm=110, duration_s=3.0, seed=1)
    out = render_midi(mid, sr=SR, duration_s=3.0, fluidsynth_bin="/nonexistent/fluidsynth")
    assert out.renderer == "numpy" and out.soundfont is None
    assert out.audio.shape == (2, 3 * SR) and np.isfinite(out.audio).all()
    level_db = 20 * np.log10(np.sqrt(np.mean(out.audio**2)))
    assert -20.0 < level_db < -13.9 and np.abs(out.audio).max() <= 0.95  # -14 dBFS RMS unless peaks limit it
    # the chords are there: E minor triad pitch classes dominate the spectrum's chroma
    y = out.audio.mean(axis=0)[: 2 * SR].astype(np.float64)
    spec = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(y.size, 1 / SR)
    sel = (f > 100) & (f < 2000)
    chroma = np.zeros(12)
    np.add.at(chroma, np.round(hz_to_midi(f[sel])).astype(int) % 12, spec[sel] ** 2)
    assert set(np.argsort(chroma)[-3:]) & {4, 7, 11}
    with pytest.raises(CorpusError, match="fluidsynth"):
        render_midi(mid, sr=SR, renderer="fluidsynth", fluidsynth_bin="/nonexistent/fluidsynth")
    sc = make_scenario(seed=3, duration_s=3.0, sr=SR, fluidsynth_bin="/nonexistent/fluidsynth")
    assert sc.truth["backing"]["renderer"] == "numpy"


@pytest.mark.skipif(not fluidsynth_available(), reason="fluidsynth or FluidR3_GM not installed")
def test_fluidsynth_backing():
    backing = make_backing("G zhi", tempo_bpm=96, duration_s=3.0, sr=SR, seed=2, renderer="fluidsynth")
    assert backing.renderer == "fluidsynth" and backing.audio.shape == (2, 3 * SR)
    assert np.sqrt(np.mean(backing.audio**2)) > 0.05
    again = make_backing("G zhi", tempo_bpm=96, duration_s=3.0, sr=SR, seed=2, renderer="fluidsynth")
    assert np.array_equal(backing.audio, again.audio)


def test_bundled_examples_match_their_truth():
    import json
    from pathlib import Path

    from melisma.audio_io import load_audio, probe

    folder = Path(__file__).resolve().parents[2] / "firmware" / "melisma" / "examples"
    truth = json.loads((folder / "truth.json").read_text())
    sizes = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".m4a", ".mid", ".json", ".txt"))
    assert sizes < 1_000_000
    info_take, info_backing = probe(folder / "take.m4a"), probe(folder / "backing.m4a")
    assert (info_take.codec, info_take.channels, info_take.sr) == ("aac", 1, 48000)
    assert (info_backing.codec, info_backing.channels) == ("aac", 2)
    assert truth["offset_ms"] == pytest.approx(180.0) and truth["key"]["name"] == "A minor"
    assert {"vibrato", "slide_in"} <= {o["type"] for o in truth["ornaments"]}
    readme = (folder / "README.txt").read_text()
    assert "180.0 ms" in readme and "A minor" in readme and "92 BPM" in readme
    # the sung pitch in the degraded take, read at t + offset, is the truth's f0
    take, sr = load_audio(folder / "take.m4a", sr=SR, mono=True)
    assert take.size / sr == pytest.approx(truth["duration_s"], abs=0.1)
    f0 = np.asarray(truth["f0"]["f0_hz"])
    hop = truth["f0"]["hop_s"]

    def pitch_errors(offset_s):
        errors = []
        for note in truth["notes"]:
            for t in np.arange(note["start_s"] + 0.12, note["end_s"] - 0.08, 0.05):
                ref = f0[int(round(t / hop)) - 2 : int(round(t / hop)) + 3]
                if (ref > 0).all():
                    est = acf_f0(take, SR, centre_s=t + offset_s, win_s=0.025)
                    errors.append(cents(est, np.exp(np.mean(np.log(ref)))))
        return np.abs(errors)

    errors = pitch_errors(truth["offset_ms"] / 1000)
    assert len(errors) > 100
    assert np.median(errors) < 15.0 and np.mean(errors < 50) > 0.85  # the rest: octave slips of a plain ACF
    assert np.median(pitch_errors(0.0)) > 3 * np.median(errors)  # ignoring the offset would show


def test_make_examples_help_says_what_it_does(capsys):
    from tools.make_examples import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example take" in out and "fluidsynth" in out and "180 ms" in out
