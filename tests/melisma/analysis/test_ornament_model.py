"""The int8 TFLite ornament classifier: the committed model, its frame F1 on held-out generated
contours, the OrnamentDetector protocol and its Ornament records, and the GTSinger pairs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from melisma.analysis.notes import segment_notes
from melisma.analysis.ornament_model import (
    FRAME_CLASSES,
    FRAME_CODES,
    MODEL_FILE,
    N_FEATURES,
    WINDOW_FRAMES,
    TfliteOrnamentDetector,
    contour_features,
)
from melisma.analysis.ornaments import (
    ORNAMENT_CODES,
    Ornament,
    OrnamentDetector,
    detect_ornaments,
    match_spans,
    ornament_frames,
)
from melisma.analysis.pitch import PitchTrack, midi_to_hz, track_pitch
from melisma.errors import AnalysisError, ModelError
from melisma.models_runtime import TfliteModel, models_dir

from tools.corpus.voice import NoteSpec, synthesize_voice

REPO = Path(__file__).resolve().parents[3]


def _make_contours():
    spec = importlib.util.spec_from_file_location("make_contours", REPO / "models" / "ornaments" / "make_contours.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_contours", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def detector() -> TfliteOrnamentDetector:
    return TfliteOrnamentDetector()


def test_committed_model_is_small_int8_and_loads():
    path = models_dir().joinpath(*MODEL_FILE)
    assert path.is_file()
    assert path.stat().st_size <= 100 * 1024
    model = TfliteModel(path)
    assert model.is_int8
    assert model.input_shape == (1, WINDOW_FRAMES, N_FEATURES)
    (probs,) = model.predict(np.zeros((1, WINDOW_FRAMES, N_FEATURES), np.float32))
    assert probs.shape == (1, WINDOW_FRAMES, len(FRAME_CLASSES))
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=0.05)


def test_frame_f1_per_class_on_held_out_generated_contours(detector):
    mc = _make_contours()
    # seed 31: never used in training (0), validation (1) or the evaluation script (7)
    examples = mc.make_dataset(16, seed=31)
    y = np.concatenate([e.labels for e in examples])
    p = np.concatenate([detector.frame_labels(e.track) for e in examples])
    for c, name in enumerate(FRAME_CLASSES):
        tp = np.sum((p == c) & (y == c))
        precision, recall = tp / max(np.sum(p == c), 1), tp / max(np.sum(y == c), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        assert np.sum(y == c) > 50, name  # the set holds every class
        assert f1 >= F1_MIN[name], f"{name}: frame F1 {f1:.3f} (precision {precision:.3f}, recall {recall:.3f})"


#: Frame F1 floors on random phrases (ornaments overlapping and competing, tracker noise). Slides
#: and grace notes are short, so a frame or two of boundary disagreement costs them most; they
#: reach F1 >= 0.9 as events on one-type takes (test_event_f1_per_type_on_tracked_synthetic_takes)
#: about 0.90 per frame on 200 random phrases but 0.84-0.86 on these 16 (MODEL_CARD.md), so their
#: floor guards against regressions only (the 16 phrases hold ~230 grace frames: a noisy figure).
F1_MIN = {"unvoiced": 0.95, "steady": 0.92, "vibrato": 0.92, "slide": 0.8, "grace": 0.8, "trill": 0.92}


def _one_kind_take(kind: str, seed: int, n: int = 8):
    """``n`` notes each carrying one ``kind`` ornament with random parameters, sung and tracked."""
    rng = np.random.default_rng(seed)
    notes: list[NoteSpec] = []
    t = 0.3
    for i in range(n):
        midi, dur = float(rng.integers(57, 72)), float(rng.uniform(0.5, 0.8))
        o = {
            "vibrato": {"type": "vibrato", "rate_hz": rng.uniform(5.0, 7.5), "extent_cents": rng.uniform(60, 180),
                        "onset_ms": rng.uniform(80, 200), "fade_in_ms": rng.uniform(100, 250)},
            "slide_in": {"type": "slide_in", "duration_ms": rng.uniform(80, 200), "interval_cents": -rng.uniform(100, 300)},
            "slide_out": {"type": "slide_out", "duration_ms": rng.uniform(120, 250), "interval_cents": -rng.uniform(150, 400)},
            "grace": {"type": "grace", "duration_ms": rng.uniform(40, 130),
                      "interval_cents": float(rng.choice([-1, 1, 1]) * rng.choice([100, 200, 300]))},
            "trill": {"type": "trill", "rate_hz": rng.uniform(5.5, 7.5), "interval_cents": float(rng.choice([100, 200]))},
            "portamento": {"type": "portamento", "duration_ms": rng.uniform(80, 220), "shape": ["sigmoid", "linear"][i % 2]},
        }[kind]
        notes.append(NoteSpec(midi, t, dur, detune_cents=float(rng.uniform(-30, 30)), ornaments=[o]))
        if kind == "portamento":  # the glide needs a legato next note at another pitch
            notes.append(NoteSpec(midi + float(rng.choice([-4, -3, -2, 2, 3, 4])), t + dur, dur))
            t += dur
        t += dur + float(rng.uniform(0.15, 0.3))
    take = synthesize_voice(notes, sr=16000, seed=seed, breaths=False)
    return take, track_pitch(take.audio, sr=take.sr)


@pytest.mark.parametrize("kind", ["vibrato", "slide_in", "slide_out", "portamento", "grace", "trill"])
def test_event_f1_per_type_on_tracked_synthetic_takes(detector, kind):
    take, track = _one_kind_take(kind, seed=23)
    found = [o for o in detector.detect(track, segment_notes(track)) if o.type == kind]
    truth = [o for o in take.ornaments if o["type"] == kind]
    tp = match_spans([(o.start_s, o.end_s) for o in found], [(r["start_s"], r["end_s"]) for r in truth])
    precision, recall = tp / max(len(found), 1), tp / max(len(truth), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    assert f1 >= 0.9, f"{kind}: F1 {f1:.2f} (precision {precision:.2f}, recall {recall:.2f})"


def _vibrato_track(rate_hz=6.0, extent_cents=120.0, seconds=1.5, midi=64.0) -> PitchTrack:
    t = np.arange(int(seconds / 0.005)) * 0.005
    m = midi + 0.5 * extent_cents / 100.0 * np.sin(2 * np.pi * rate_hz * t)
    hz = np.r_[np.zeros(20), midi_to_hz(m), np.zeros(20)]
    return PitchTrack(0.005, hz, (hz > 0).astype(np.float32), "test")


def test_is_an_ornament_detector_and_measures_vibrato(detector):
    assert isinstance(detector, OrnamentDetector)
    track = _vibrato_track()
    found = detect_ornaments(track, segment_notes(track), detector=detector)
    vib = [o for o in found if o.type == "vibrato"]
    assert len(vib) == 1 and all(isinstance(o, Ornament) for o in found)
    o = vib[0]
    assert o.note == 0 and o.duration_s > 1.0
    assert abs(o.params["rate_hz"] - 6.0) < 0.3
    assert abs(o.params["extent_cents"] - 120.0) < 25.0  # peak to peak
    assert Ornament.from_dict(o.to_dict()).type == "vibrato"


def test_steady_note_has_no_ornament(detector):
    hz = np.r_[np.zeros(20), np.full(300, 330.0), np.zeros(20)]
    track = PitchTrack(0.005, hz, (hz > 0).astype(np.float32))
    labels = detector.frame_labels(track)
    ornament_codes = [FRAME_CODES[c] for c in ("vibrato", "slide", "grace", "trill")]
    assert not np.isin(labels, ornament_codes).any()
    assert np.mean(labels[20:320] == FRAME_CODES["steady"]) > 0.85  # the voicing edges may read unvoiced
    assert [o.type for o in detector.detect(track, segment_notes(track))] == []


def test_tracker_octave_slip_is_no_ornament(detector):
    hz = np.r_[np.zeros(20), np.full(300, 330.0), np.zeros(20)]
    hz[150:160] *= 2.0  # a 50 ms octave error of the tracker
    track = PitchTrack(0.005, hz, (hz > 0).astype(np.float32))
    assert [o.type for o in detector.detect(track, segment_notes(track))] == []


def _sung(notes, seed=5):
    take = synthesize_voice(notes, sr=16000, seed=seed, breaths=False)
    return take, track_pitch(take.audio, sr=take.sr)


def test_records_of_slides_grace_and_trill_on_tracked_synthetic_singing(detector):
    notes = [
        NoteSpec(60, 0.2, 0.6, ornaments=[{"type": "grace", "duration_ms": 90.0, "interval_cents": 200.0}]),
        NoteSpec(64, 1.0, 0.6, ornaments=[{"type": "slide_in", "duration_ms": 180.0, "interval_cents": -300.0}]),
        NoteSpec(62, 1.8, 0.5, ornaments=[{"type": "portamento", "duration_ms": 200.0, "shape": "linear"}]),
        NoteSpec(67, 2.3, 0.6),
        NoteSpec(65, 3.1, 0.8, ornaments=[{"type": "trill", "rate_hz": 6.5, "interval_cents": 200.0}]),
        NoteSpec(60, 4.1, 0.7, ornaments=[{"type": "slide_out", "duration_ms": 220.0, "interval_cents": -400.0}]),
    ]
    _take, track = _sung(notes)
    found = detector.detect(track, segment_notes(track))
    by_type = {}
    for o in found:
        by_type.setdefault(o.type, []).append(o)

    def near(kind, t):
        cands = [o for o in by_type.get(kind, []) if o.start_s - 0.1 <= t <= o.end_s + 0.1]
        assert cands, f"no {kind} near {t:.2f} s in {[(o.type, round(o.start_s, 2)) for o in found]}"
        return cands[0]

    g = near("grace", 0.25)
    assert 40 <= g.params["duration_ms"] <= 160 and 120 <= g.params["interval_cents"] <= 280
    s = near("slide_in", 1.05)
    assert 80 <= s.params["duration_ms"] <= 300 and -380 <= s.params["interval_cents"] <= -200
    assert s.params["shape"] in ("linear", "sigmoid")
    p = near("portamento", 2.3)
    assert 350 <= p.params["interval_cents"] <= 650 and p.params["to_note"] == p.note + 1
    tr = near("trill", 3.5)
    assert abs(tr.params["rate_hz"] - 6.5) < 0.7 and 140 <= abs(tr.params["interval_cents"]) <= 260
    f = near("slide_out", 4.7)
    assert f.params["interval_cents"] < -250
    # per-frame codes for coverage statistics work on these records too
    codes = ornament_frames(found, n_frames=len(track.hz), hop_s=track.hop_s)
    assert (codes == ORNAMENT_CODES["trill"]).sum() > 0.4 / track.hop_s


def test_features_and_labels_follow_the_track_hop(detector):
    track = _vibrato_track(seconds=1.0)
    coarse = PitchTrack(0.01, track.hz[::2], track.confidence[::2])
    feats = contour_features(coarse)
    assert feats.shape == (len(track.hz[::2]) * 2 - 1, N_FEATURES)
    labels = detector.frame_labels(coarse)
    assert labels.shape == coarse.hz.shape
    assert np.mean(labels[40:90] == FRAME_CODES["vibrato"]) > 0.8


def test_class_bias_shifts_the_decoded_labels(detector):
    track = _vibrato_track(seconds=1.0)
    probs = detector.frame_probabilities(track)
    plain = TfliteOrnamentDetector(class_bias={}).frame_labels(track, probs=probs)
    assert np.mean(plain[40:160] == FRAME_CODES["vibrato"]) > 0.8
    # a large enough offset against vibrato hands its frames to the next most likely class
    against = TfliteOrnamentDetector(class_bias={"vibrato": -20.0}).frame_labels(track, probs=probs)
    assert not np.any(against == FRAME_CODES["vibrato"])
    with pytest.raises(AnalysisError, match="wobble"):
        TfliteOrnamentDetector(class_bias={"wobble": 1.0}).frame_labels(track, probs=probs)


def test_missing_model_names_the_path():
    det = TfliteOrnamentDetector(model_path="/nonexistent/orn.tflite")
    track = _vibrato_track(seconds=0.5)
    with pytest.raises(ModelError, match=r"/nonexistent/orn.tflite"):
        det.detect(track, segment_notes(track))


@pytest.mark.parametrize("pair, technique", [("fr05_{}", "Vibrato"), ("fr02_{}", "Glissando")])
def test_gtsinger_technique_take_has_more_of_its_technique(shared_data, detector, pair, technique):
    from melisma.audio_io import load_audio

    kinds = {"Vibrato": ("vibrato", "trill"), "Glissando": ("slide_in", "slide_out", "portamento")}[technique]
    cover = {}
    for take in (technique, "Control"):
        path = shared_data / "gtsinger_demo" / (pair.format(take) + ".flac")
        if not path.is_file():
            pytest.skip(f"{path} not available")
        y, sr = load_audio(path, sr=16000, mono=True)
        track = track_pitch(y, sr=sr)
        codes = ornament_frames(detector.detect(track, segment_notes(track)), n_frames=len(track.hz), hop_s=track.hop_s)
        cover[take] = np.mean(np.isin(codes[track.hz > 0], [ORNAMENT_CODES[k] for k in kinds]))
    assert cover[technique] > cover["Control"] + 0.05, cover


def test_trend_feature_sees_the_glide_under_a_vibrato_and_ignores_the_vibrato_alone():
    t = np.arange(0.0, 2.0, 0.005)
    vibrato = 1.0 * np.sin(2 * np.pi * 6.0 * t)  # 200 cents peak to peak
    glide = np.clip(t - 0.8, 0.0, 0.5) * 4.0  # 400 cents/s from 0.8 s to 1.3 s
    for curve, want_st_per_50ms in ((vibrato, 0.0), (vibrato + glide, 0.2)):
        hz = midi_to_hz(60.0 + curve)
        trend = contour_features(PitchTrack(0.005, hz, np.ones_like(hz)))[:, 5] * 2.0  # st per 50 ms
        inside = slice(int(0.9 / 0.005), int(1.2 / 0.005))
        assert abs(np.median(trend[inside]) - want_st_per_50ms) < 0.04
        # outside the glide the vibrato (swinging 1.9 st per 50 ms at its steepest) leaves a residue
        # of under a quarter of the glide's slope
        assert np.max(np.abs(trend[int(0.2 / 0.005) : int(0.6 / 0.005)])) < 0.05


def test_slide_smaller_than_the_vibrato_around_it_keeps_the_vibrato_label():
    mc = _make_contours()
    vib = {"type": "vibrato", "start_s": 0.0, "end_s": 1.0,
           "params": {"rate_hz": 6.0, "extent_cents": 200.0, "fade_in_ms": 100.0}}
    small = {"type": "slide_out", "start_s": 0.7, "end_s": 1.0, "params": {"interval_cents": -120.0, "shape": "linear"}}
    large = {"type": "slide_out", "start_s": 0.7, "end_s": 1.0, "params": {"interval_cents": -400.0, "shape": "linear"}}
    assert mc._hidden_in_vibrato(small, [vib, small])
    assert not mc._hidden_in_vibrato(large, [vib, large])
    assert [o["type"] for o in mc.events([vib, small])] == ["vibrato"]
    assert [o["type"] for o in mc.events([vib, large])] == ["vibrato", "slide_out"]
