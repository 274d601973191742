"""The int8 TFLite pitch model as a PitchTracker: real interpreter, synthetic voices with exact f0."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.pitch import PitchTracker, track_pitch
from melisma.analysis.pitch_model import (
    HOP_S,
    LEVEL_ROWS,
    SR,
    StreamingPitchModel,
    TflitePitchTracker,
    context_frames,
    decode_pitch,
    hz_to_pitch_bin,
    level_features,
    model_inputs,
    pitch_bin_hz,
    spectrogram_features,
    voicing_hysteresis,
)
from melisma.errors import AnalysisError, ModelError

from tools.corpus.voice import NoteSpec, synthesize_voice


@pytest.fixture(scope="module")
def tracker():
    return TflitePitchTracker()


def _phrase(voice: str, base_midi: float, seed: int):
    notes = [
        NoteSpec(base_midi, 0.2, 0.6, vowel="a", ornaments=[{"type": "slide_in", "interval_cents": -150.0}]),
        NoteSpec(base_midi + 2, 0.8, 0.5, vowel="e"),
        NoteSpec(base_midi + 4, 1.3, 0.9, vowel="o", ornaments=[{"type": "vibrato", "rate_hz": 6.0, "extent_cents": 120.0}]),
        NoteSpec(base_midi + 7, 2.6, 0.4, vowel="i", ornaments=[{"type": "grace", "interval_cents": 200.0}]),
        NoteSpec(base_midi + 5, 3.0, 0.7, vowel="u"),
    ]
    return synthesize_voice(notes, sr=SR, voice=voice, seed=seed)


def _scores(track, take):
    ref_t = take.times_s
    idx = np.clip(np.round(ref_t / track.hop_s).astype(int), 0, len(track.hz) - 1)
    est, ref = track.hz[idx].astype(np.float64), take.f0_hz
    rv, ev = ref > 0, est > 0
    both = rv & ev
    cents = np.abs(1200 * np.log2(np.where(both, est, 1) / np.where(both, ref, 1)))
    return {"rpa": np.mean(both[rv] & (cents[rv] < 50)), "vfa": np.mean(ev[~rv]), "median": np.median(cents[both])}


@pytest.mark.parametrize("voice, base_midi, seed", [("female", 64, 1), ("male", 50, 2), ("child", 70, 3)])
def test_tracks_synthetic_voice(tracker, voice, base_midi, seed):
    take = _phrase(voice, base_midi, seed)
    track = tracker.track(take.audio, sr=take.sr)
    assert track.tracker == "tflite-pitch" and track.hop_s == HOP_S
    s = _scores(track, take)
    assert s["rpa"] >= 0.9, s
    assert s["median"] < 20, s
    assert s["vfa"] < 0.3, s


def test_is_a_pitch_tracker_and_plugs_into_track_pitch(tracker):
    assert isinstance(tracker, PitchTracker)
    take = _phrase("female", 62, 4)
    y48 = np.repeat(take.audio, 3)  # crude 48 kHz version: same pitch, imaging above 8 kHz
    track = track_pitch(y48, sr=48000, tracker=tracker)
    assert _scores(track, take)["rpa"] >= 0.85


def test_level_independent_and_silence_unvoiced(tracker):
    take = _phrase("male", 55, 5)
    loud = tracker.track(take.audio, sr=SR)
    quiet = tracker.track(take.audio * 0.05, sr=SR)
    both = (loud.hz > 0) & (quiet.hz > 0)
    assert np.mean((loud.hz > 0) == (quiet.hz > 0)) > 0.97
    assert np.max(np.abs(1200 * np.log2(loud.hz[both] / quiet.hz[both]))) < 25
    silent = tracker.track(np.zeros(SR, np.float32), sr=SR)
    assert len(silent.hz) == 100 and not silent.voiced.any()
    assert len(tracker.track(np.zeros(0, np.float32), sr=SR).hz) == 0


def test_stereo_input_is_averaged(tracker):
    take = _phrase("female", 66, 6)
    mono = tracker.track(take.audio, sr=SR)
    stereo = tracker.track(np.stack([take.audio, take.audio]), sr=SR)
    np.testing.assert_array_equal(mono.hz, stereo.hz)


@pytest.mark.parametrize("block", [160, 333, 2048])
def test_streaming_matches_offline(tracker, block):
    take = _phrase("female", 60, 7)
    y = take.audio[: int(2.5 * SR)]
    offline = tracker.track(y, sr=SR)
    stream = StreamingPitchModel(TflitePitchTracker(batch_frames=8))
    parts = [stream.process(y[i : i + block]) for i in range(0, len(y), block)]
    parts.append(stream.flush())
    hz = np.concatenate([p.hz for p in parts])
    assert len(hz) == len(offline.hz)
    # int8 arithmetic is exact, so the same frames give the same numbers
    np.testing.assert_allclose(hz, offline.hz, rtol=1e-5)
    assert abs(stream.latency_s - 0.042) < 1e-9


def test_streaming_emits_frames_within_bounded_latency():
    stream = StreamingPitchModel(TflitePitchTracker(batch_frames=8))
    block = 320  # 20 ms
    t = np.arange(SR) / SR
    y = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    received = done = 0
    for i in range(0, len(y), block):
        out = stream.process(y[i : i + block])
        received += block
        done += len(out.hz)
        # every frame whose centre is older than the latency has been emitted
        assert done * HOP_S >= received / SR - stream.latency_s - HOP_S


def test_missing_model_raises_model_error(tmp_path):
    t = TflitePitchTracker(model_path=tmp_path / "missing.tflite")
    with pytest.raises(ModelError, match=r"missing.tflite"):
        t.track(np.zeros(1600, np.float32), sr=SR)


def test_bins_and_decoding_round_trip():
    hz = np.array([65.0, 220.0, 440.0, 1000.0])
    np.testing.assert_allclose(pitch_bin_hz(hz_to_pitch_bin(hz)), hz, rtol=1e-9)
    logits = np.full((4, 300), -10.0, np.float32)
    b = hz_to_pitch_bin(hz)
    for i, bi in enumerate(b):
        lo = int(np.floor(bi))
        frac = bi - lo
        logits[i, lo] = np.log(1 - frac + 1e-6) + 5
        logits[i, lo + 1] = np.log(frac + 1e-6) + 5
    out, conf = decode_pitch(logits, np.array([5.0, 5.0, 5.0, -5.0]))
    np.testing.assert_allclose(out[:3], hz[:3], rtol=0.01)
    assert out[3] == 0 and conf[3] < 0.5


def test_voicing_hysteresis_keeps_notes_through_dips_and_carries_state():
    p = np.array([0.1, 0.95, 0.4, 0.15, 0.95, 0.05, 0.4, 0.95, 0.3])
    plain = voicing_hysteresis(p, threshold=0.9)
    hyst = voicing_hysteresis(p, threshold=0.9, threshold_low=0.2)
    assert plain.tolist() == [False, True, False, False, True, False, False, True, False]
    assert hyst.tolist() == [False, True, True, False, True, False, False, True, True]
    # split anywhere, carrying the last flag, gives the same flags (what streaming relies on)
    for cut in range(1, len(p)):
        first = voicing_hysteresis(p[:cut], threshold=0.9, threshold_low=0.2)
        second = voicing_hysteresis(p[cut:], threshold=0.9, threshold_low=0.2, voiced_before=bool(first[-1]))
        assert np.concatenate([first, second]).tolist() == hyst.tolist()
    # decode_pitch applies it; the silence gate still wins
    logits = np.zeros((len(p), 300), np.float32)
    logit_v = np.log(p / (1 - p))
    hz, _ = decode_pitch(logits, logit_v, voicing_threshold=0.9, voicing_threshold_low=0.2)
    assert ((hz > 0) == hyst).all()
    hz, _ = decode_pitch(logits, logit_v, peak_db=np.full(len(p), -70.0), voicing_threshold=0.9,
                         voicing_threshold_low=0.2)
    assert not (hz > 0).any()


def test_streaming_matches_offline_with_hysteresis():
    take = _phrase("male", 50, 3)
    rng = np.random.default_rng(3)
    y = take.audio[: int(2.5 * SR)]
    y = (y + 0.3 * float(np.std(y)) * rng.standard_normal(len(y))).astype(np.float32)  # noisy: voicing flickers
    offline = TflitePitchTracker(voicing_threshold=0.9, voicing_threshold_low=0.1).track(y, sr=SR)
    stream = StreamingPitchModel(TflitePitchTracker(batch_frames=8, voicing_threshold=0.9, voicing_threshold_low=0.1))
    parts = [stream.process(y[i : i + 333]) for i in range(0, len(y), 333)]
    parts.append(stream.flush())
    hz = np.concatenate([p.hz for p in parts])
    np.testing.assert_allclose(hz, offline.hz, rtol=1e-5)
    plain = TflitePitchTracker(voicing_threshold=0.9).track(y, sr=SR)
    assert np.sum(offline.hz > 0) >= np.sum(plain.hz > 0)  # hysteresis only adds voiced frames


def test_level_features_are_relative_causal_and_blockwise_exact():
    rng = np.random.default_rng(11)
    # a note at -20 dB for 1 s, a reverb-like tail falling 60 dB/s, silence, a softer note
    level = np.concatenate([np.full(100, -20.0), -20.0 - 0.6 * np.arange(1, 51), np.full(50, -110.0),
                            np.full(100, -32.0)]) + rng.normal(0, 0.3, 300)
    whole, state = level_features(level)
    assert whole.shape == (300, LEVEL_ROWS) and whole.dtype == np.float32
    assert whole.min() >= 0.0 and whole.max() <= 1.0
    # the note sits at its own running peak and is steady; the tail falls below it and is falling
    assert whole[20:100, 0].min() > 0.97 and abs(whole[20:100, 1].mean() - 0.5) < 0.02
    assert whole[130:150, 0].max() < whole[20:100, 0].min() - 0.15
    assert whole[110:150, 1].mean() < 0.46 and whole[110:150, 1].max() < 0.48  # -3 dB per 50 ms
    # the softer note, 12 dB under the first: 5-6 dB under the running peak 1.0-1.2 s after the
    # first note (the peak decays by 6 dB/s), at the peak once it has decayed to the note (2 s)
    assert 0.88 < whole[200:220, 0].mean() < 0.94
    assert whole[295:300, 0].min() > 0.97
    # a gain change moves nothing
    louder, _ = level_features(level + 17.0)
    np.testing.assert_allclose(louder, whole, atol=1e-5)
    # causal: the first frames do not depend on what follows
    head, _ = level_features(level[:120])
    np.testing.assert_array_equal(head, whole[:120])
    # block by block with the carried state equals all at once
    parts, st = [], None
    for chunk in np.array_split(level, [1, 4, 37, 38, 200]):
        out, st = level_features(chunk, state=st)
        parts.append(out)
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    assert st.running_peak_db == pytest.approx(state.running_peak_db)


def test_model_inputs_stack_context_and_level_rows():
    feats = np.random.default_rng(3).random((6, 128), dtype=np.float32)
    levels = np.linspace(0, 1, 12, dtype=np.float32).reshape(6, 2)
    x = model_inputs(feats, levels)
    assert x.shape == (6, 5, 128)
    np.testing.assert_array_equal(x[:, :3], context_frames(feats))
    np.testing.assert_array_equal(x[2, 3], np.full(128, levels[2, 0]))
    np.testing.assert_array_equal(x[4, 4], np.full(128, levels[4, 1]))
    assert model_inputs(feats).shape == (6, 3, 128)


def test_tracker_feeds_level_rows_when_the_model_takes_them(tracker):
    take = _phrase("female", 60, 8)
    feats, _peak, level_db = spectrogram_features(take.audio)
    if tracker.uses_level:
        with pytest.raises(AnalysisError, match="level_db"):
            tracker.raw_outputs(feats)
        # what the level rows say changes the model's voicing output
        _, v_true = tracker.raw_outputs(feats, level_db)
        _, v_faint = tracker.raw_outputs(feats, level_db - 40.0 * (np.arange(len(level_db)) % 2))
        assert np.abs(v_true - v_faint).max() > 0.5
    else:
        tracker.raw_outputs(feats)  # a 3-row model needs no levels
    assert tracker.model.input_shape[1] in (3, 3 + LEVEL_ROWS)
