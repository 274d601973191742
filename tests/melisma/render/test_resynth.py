"""Resynthesis along a new pitch curve: pitch accuracy (re-tracked), formants, artefacts,
pass-through, the Stage form and its streaming."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from melisma.errors import RenderError
from melisma.render.correct import CorrectionSettings, target_f0
from melisma.render.resynth import PitchCorrector, frame_ratios, region_spans, shift_pitch

from tools.bench_correction import chipmunk_shift, demo_take, harmonic_envelope_error_db, hnr_db, note_centre_errors, yin_track
from tools.corpus.voice import NoteSpec, synthesize_voice

SR = 24000


def _cents(a, b):
    ok = (a > 0) & (b > 0)
    return 1200 * np.log2(a[ok] / b[ok])


@pytest.fixture(scope="module")
def steady():
    """One steady female F#4 (370 Hz) 'a', no ornaments."""
    return synthesize_voice([NoteSpec(66, 0.1, 1.3)], sr=SR, voice="female", seed=3, breaths=False)


@pytest.fixture(scope="module")
def two_notes():
    """Two notes with silence between them."""
    return synthesize_voice([NoteSpec(57, 0.1, 0.5), NoteSpec(60, 1.0, 0.5)], sr=SR, voice="male", seed=4, breaths=False)


def _inner(take, a_s=0.3, b_s=1.3):
    return slice(int(a_s / take.hop_s), int(b_s / take.hop_s))


@pytest.mark.parametrize("method", ["psola", "world"])
@pytest.mark.parametrize("semitones", [-2.0, 2.0])
def test_constant_shift_lands_on_the_new_pitch(steady, method, semitones):
    if method == "world":
        pytest.importorskip("pyworld", reason="pyworld (WORLD vocoder, the comparison peer) is not installed")
    tgt = steady.f0_hz * 2 ** (semitones / 12)
    out = shift_pitch(steady.audio, sr=SR, f0_hz=steady.f0_hz, hop_s=steady.hop_s, target_f0_hz=tgt, method=method)
    track = yin_track(out, sr=SR, hop_s=steady.hop_s)[0][: tgt.size]
    s = _inner(steady)
    assert abs(np.median(_cents(track[s], tgt[s]))) < 3


@pytest.mark.parametrize("semitones", [-2.0, 2.0])
def test_formants_stay_put(steady, semitones):
    tgt = steady.f0_hz * 2 ** (semitones / 12)
    out = shift_pitch(steady.audio, sr=SR, f0_hz=steady.f0_hz, hop_s=steady.hop_s, target_f0_hz=tgt)
    kw = dict(sr=SR, f0_before_hz=steady.f0_hz, f0_after_hz=tgt, hop_s=steady.hop_s, start_s=0.3, end_s=1.3)
    psola = harmonic_envelope_error_db(steady.audio, out, **kw)
    chipmunk = harmonic_envelope_error_db(steady.audio, chipmunk_shift(steady.audio, semitones), **kw)
    assert psola < 1.0  # dB RMS across the harmonics up to 5 kHz
    assert chipmunk > 1.5 and psola < chipmunk / 2  # the measure does see moved formants


def test_shift_adds_no_noise(steady):
    tgt = steady.f0_hz * 2 ** (2 / 12)
    out = shift_pitch(steady.audio, sr=SR, f0_hz=steady.f0_hz, hop_s=steady.hop_s, target_f0_hz=tgt)
    a, b = int(0.3 * SR), int(1.3 * SR)
    before = hnr_db(yin_track(steady.audio[a:b], sr=SR, hop_s=steady.hop_s)[1])
    after = hnr_db(yin_track(out[a:b], sr=SR, hop_s=steady.hop_s)[1])
    assert after > before - 2.0


def test_follows_a_time_varying_curve(steady):
    """Impose a 6 Hz, 100-cent (peak-to-peak) vibrato on a steady note."""
    t = np.arange(steady.f0_hz.size) * steady.hop_s
    tgt = steady.f0_hz * 2 ** (0.5 * np.sin(2 * np.pi * 6 * t) / 12)
    out = shift_pitch(steady.audio, sr=SR, f0_hz=steady.f0_hz, hop_s=steady.hop_s, target_f0_hz=tgt)
    track = yin_track(out, sr=SR, hop_s=steady.hop_s)[0][: tgt.size]
    s = _inner(steady)
    err = _cents(track[s], tgt[s])
    assert np.sqrt(np.mean(err**2)) < 8  # the tracker's own window smooths a little of the swing


def test_untouched_voiced_runs_and_unvoiced_audio_are_bit_exact(two_notes):
    take = two_notes
    tgt = take.f0_hz.copy()
    second = np.arange(tgt.size) * take.hop_s >= 0.9
    tgt[second] *= 2 ** (1.5 / 12)
    out = shift_pitch(take.audio, sr=SR, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=tgt)
    assert out.dtype == np.float32 and out.shape == take.audio.shape
    edge = int((1.0 - 0.02) * SR)  # the processed run starts 20 ms before the second note
    assert np.array_equal(out[:edge], take.audio[:edge])
    assert not np.allclose(out[edge:], take.audio[edge:])
    track = yin_track(out, sr=SR, hop_s=take.hop_s)[0][: tgt.size]
    s = slice(int(1.1 / take.hop_s), int(1.4 / take.hop_s))
    assert abs(np.median(_cents(track[s], tgt[s]))) < 3


def test_target_zero_means_leave_the_frame(two_notes):
    take = two_notes
    out = shift_pitch(take.audio, sr=SR, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=np.zeros_like(take.f0_hz))
    assert np.array_equal(out, take.audio)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"y": np.zeros((2, 100), np.float32)}, "mono"),
        ({"target_f0_hz": np.zeros(3)}, "same length"),
        ({"method": "autotune"}, "psola, world"),
        ({"f0_hz": -np.ones(10), "target_f0_hz": np.ones(10)}, ">= 0"),
        ({"hop_s": 0.0}, "hop_s"),
        ({"sr": 0}, "sr"),
    ],
)
def test_bad_inputs_raise_render_error_saying_what_works(kwargs, fragment):
    args = {"y": np.zeros(1000, np.float32), "sr": 8000, "f0_hz": np.zeros(10), "hop_s": 0.01, "target_f0_hz": np.zeros(10)}
    args.update(kwargs)
    y = args.pop("y")
    with pytest.raises(RenderError) as info:
        shift_pitch(y, **args)
    assert fragment in str(info.value)


@settings(max_examples=15, deadline=None)
@given(
    f0=st.floats(90, 700),
    cents=st.lists(st.floats(-300, 300), min_size=2, max_size=6),
    seed=st.integers(0, 1000),
)
def test_any_smooth_curve_gives_sane_audio(f0, cents, seed):
    sr, hop = 16000, 0.01
    n = 60
    t = np.arange(int(0.6 * sr)) / sr
    rng = np.random.default_rng(seed)
    y = (0.4 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    src = np.full(n, f0)
    src[:5] = 0
    shift = np.interp(np.arange(n), np.linspace(0, n - 1, len(cents)), cents)
    out = shift_pitch(y, sr=sr, f0_hz=src, hop_s=hop, target_f0_hz=src * 2 ** (shift / 1200))
    assert out.shape == y.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.max(np.abs(out)) < 2.0 * np.max(np.abs(y))
    assert np.array_equal(out[: int(0.03 * sr)], y[: int(0.03 * sr)])  # before the voiced run's pad


# --- Stage form ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    return demo_take(sr=SR, seed=1)


def _stage(take, **kw):
    return PitchCorrector(f0_hz=take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments, **kw)


def test_stage_matches_the_functions_and_reports_corrections(demo):
    stage = _stage(demo, settings=CorrectionSettings(ornaments="soften"))
    out = stage.correct(demo.audio, SR)
    tgt, report = target_f0(demo.f0_hz, hop_s=demo.hop_s, notes=demo.notes, ornaments=demo.ornaments,
                            settings=CorrectionSettings(ornaments="soften"))
    assert np.array_equal(out, shift_pitch(demo.audio, sr=SR, f0_hz=demo.f0_hz, hop_s=demo.hop_s, target_f0_hz=tgt))
    assert stage.corrections == report
    assert stage.describe() == {"stage": "PitchCorrector", "method": "psola", "correction": 1.0, "ornaments": "soften",
                                "max_shift_cents": 300.0}


def test_stage_settings_change_is_picked_up(demo):
    stage = _stage(demo)
    first = stage.correct(demo.audio, SR)
    stage.settings = CorrectionSettings(correction=0.0)
    assert np.array_equal(stage.correct(demo.audio, SR), demo.audio)
    assert stage.latency_samples(SR) == 0  # nothing to correct: the stage is not late either
    assert np.array_equal(stage(demo.audio, SR), demo.audio)
    assert not np.array_equal(first, demo.audio)


def test_stage_stereo_applies_the_curve_to_each_channel(demo):
    stereo = np.stack([demo.audio, 0.5 * demo.audio])
    out = _stage(demo).correct(stereo, SR)
    assert out.shape == stereo.shape
    np.testing.assert_allclose(out[1], 0.5 * out[0], atol=1e-6)


def test_stage_streams_the_aligned_correction_late_by_its_longest_run(demo):
    stage = _stage(demo)
    aligned = stage.correct(demo.audio, SR)
    late = stage.latency_samples(SR)
    spans = [stop - start for _a, _b, start, stop in
             region_spans(demo.f0_hz, frame_ratios(demo.f0_hz, target_f0(demo.f0_hz, hop_s=demo.hop_s, notes=demo.notes,
                                                                        ornaments=demo.ornaments)[0]),
                          hop_s=demo.hop_s, sr=SR)]
    assert late == max(spans) > 0
    cut = int(0.77 * SR)  # inside a voiced run: the stage waits for the run's end
    assert any(start < cut < stop for _a, _b, start, stop in
               region_spans(demo.f0_hz, np.where(demo.f0_hz > 0, 1.01, 1.0), hop_s=demo.hop_s, sr=SR))
    parts = [stage(demo.audio[:cut], SR, reset=True), stage(demo.audio[cut:], SR, reset=False)]
    streamed = np.concatenate(parts)
    np.testing.assert_array_equal(streamed[:late], 0.0)
    np.testing.assert_array_equal(streamed[late:], aligned[: aligned.size - late])


def test_stage_streaming_in_small_blocks_still_corrects(demo):
    stage = _stage(demo)
    block = 4096
    parts = [stage(demo.audio[i : i + block], SR, reset=(i == 0)) for i in range(0, demo.audio.size, block)]
    late = stage.latency_samples(SR)
    parts.append(stage(np.zeros(late, np.float32), SR, reset=False))  # flush: the last run comes out
    out = np.concatenate(parts)[late:]  # back on the take's timeline
    assert out.shape == demo.audio.shape
    errs = note_centre_errors(yin_track(out, sr=SR, hop_s=demo.hop_s)[0][: demo.f0_hz.size], hop_s=demo.hop_s,
                              notes=demo.notes, ornaments=demo.ornaments)
    assert np.median(np.abs(errs)) < 5


@pytest.mark.parametrize("gap_frames", [1, 3, 12])
def test_in_place_result_equals_the_copying_one(gap_frames):
    """Voiced runs closer than twice the edge pad overlap in their padded extents: written in place,
    each run must still read its original samples, so the result is the copying one's bit for bit."""
    sr = 16000
    y = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * sr) / sr)).astype(np.float32)
    f0 = np.full(300, 220.0)
    f0[40 : 40 + gap_frames] = 0.0
    f0[150 : 150 + gap_frames] = 0.0
    target = f0 * 2 ** (60 / 1200)
    expected = shift_pitch(y, sr=sr, f0_hz=f0, hop_s=0.01, target_f0_hz=target)
    work = y.copy()
    out = shift_pitch(work, sr=sr, f0_hz=f0, hop_s=0.01, target_f0_hz=target, in_place=True)
    assert out is work
    assert not np.array_equal(expected, y)  # something was shifted
    assert np.array_equal(out, expected)
    kept = y.copy()
    shift_pitch(kept, sr=sr, f0_hz=f0, hop_s=0.01, target_f0_hz=target)
    assert np.array_equal(kept, y)  # the default leaves its input alone
