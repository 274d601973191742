"""Ornament detection: per-type F1 on synthetic f0 curves with exact truth, arches, codes, real pairs."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.notes import Note, segment_notes
from melisma.analysis.ornaments import (
    ORNAMENT_CODES,
    DspOrnamentDetector,
    Ornament,
    OrnamentDetector,
    detect_ornaments,
    match_spans,
    ornament_frames,
)
from melisma.analysis.pitch import PitchTrack, midi_to_hz

from tools.corpus.voice import NoteSpec, synthesize_voice


def _ornament_take(kind: str, seed: int, n: int = 8):
    """``n`` notes each carrying one ``kind`` ornament (portamento: legato pairs), random parameters
    in the corpus generator's ranges, sung by the synthetic voice; returns the exact-f0 take."""
    rng = np.random.default_rng(seed)
    notes: list[NoteSpec] = []
    t = 0.3
    for i in range(n):
        midi = float(rng.integers(57, 72))
        dur = float(rng.uniform(0.5, 0.8))
        det = float(rng.uniform(-40, 40))
        if kind == "vibrato":
            o = {"type": "vibrato", "rate_hz": rng.uniform(5.5, 7.5), "extent_cents": rng.uniform(60, 180),
                 "onset_ms": rng.uniform(80, 200), "fade_in_ms": rng.uniform(100, 250)}
        elif kind == "slide_in":
            o = {"type": "slide_in", "duration_ms": rng.uniform(80, 200), "interval_cents": -rng.uniform(100, 300),
                 "shape": ["sigmoid", "linear"][i % 2]}
        elif kind == "slide_out":
            o = {"type": "slide_out", "duration_ms": rng.uniform(120, 250), "interval_cents": -rng.uniform(150, 400)}
        elif kind == "grace":
            o = {"type": "grace", "duration_ms": rng.uniform(40, 130),
                 "interval_cents": float(rng.choice([-1, 1, 1]) * rng.choice([100, 200, 300]))}
        elif kind == "trill":
            o = {"type": "trill", "rate_hz": rng.uniform(5.5, 7.5), "interval_cents": float(rng.choice([100, 200]))}
        elif kind == "portamento":
            o = {"type": "portamento", "duration_ms": rng.uniform(60, 220), "shape": ["sigmoid", "linear"][i % 2]}
        notes.append(NoteSpec(midi, t, dur, detune_cents=det, ornaments=[o]))
        if kind == "portamento":  # the glide needs a legato next note at another pitch
            step = float(rng.choice([-4, -3, -2, -1, 1, 2, 3, 4]))
            notes.append(NoteSpec(midi + step, t + dur, dur, detune_cents=float(rng.uniform(-30, 30))))
            t += dur
        t += dur + float(rng.uniform(0.15, 0.3))
    return synthesize_voice(notes, sr=8000, seed=seed, breaths=False)


def _track_of(take) -> PitchTrack:
    return PitchTrack(take.hop_s, take.f0_hz, np.ones_like(take.f0_hz), "truth")


def _f1(found: list[Ornament], truth: list[dict], kind: str) -> float:
    det = [o for o in found if o.type == kind]
    ref = [o for o in truth if o["type"] == kind]
    tp = match_spans([(o.start_s, o.end_s) for o in det], [(r["start_s"], r["end_s"]) for r in ref])
    precision = tp / max(len(det), 1)
    recall = tp / max(len(ref), 1)
    return 2 * precision * recall / max(precision + recall, 1e-9)


@pytest.mark.parametrize("kind", ["vibrato", "slide_in", "slide_out", "portamento", "grace", "trill"])
def test_f1_per_ornament_type_on_exact_curves(kind):
    take = _ornament_take(kind, seed=11)
    track = _track_of(take)
    found = detect_ornaments(track, segment_notes(track))
    assert _f1(found, take.ornaments, kind) >= 0.9, [o.to_dict() for o in found]


def test_vibrato_parameters_are_measured():
    take = _ornament_take("vibrato", seed=5, n=5)
    track = _track_of(take)
    found = [o for o in detect_ornaments(track, segment_notes(track)) if o.type == "vibrato"]
    truth = [o for o in take.ornaments if o["type"] == "vibrato"]
    assert len(found) == len(truth)
    for f, t in zip(found, truth, strict=False):
        assert abs(f.params["rate_hz"] - t["params"]["rate_hz"]) < 0.5
        # the fade-in lowers early cycles; the median swing stays near the full extent
        assert abs(f.params["extent_cents"] - t["params"]["extent_cents"]) < 0.3 * t["params"]["extent_cents"]


def test_slide_and_grace_parameters():
    for kind in ("slide_in", "grace"):
        take = _ornament_take(kind, seed=3, n=4)
        track = _track_of(take)
        found = [o for o in detect_ornaments(track, segment_notes(track)) if o.type == kind]
        truth = [o for o in take.ornaments if o["type"] == kind]
        assert len(found) == len(truth)
        for f, t in zip(found, truth, strict=False):
            assert np.sign(f.params["interval_cents"]) == np.sign(t["params"]["interval_cents"])
            assert abs(f.params["interval_cents"] - t["params"]["interval_cents"]) < 60
            assert abs(f.params["duration_ms"] - t["params"]["duration_ms"]) < 60


def _curve_track(midi: np.ndarray, hop: float = 0.005) -> PitchTrack:
    hz = np.where(np.isfinite(midi), midi_to_hz(np.nan_to_num(midi)), 0.0)
    return PitchTrack(hop, hz, np.ones_like(hz))


def test_arch_and_natural_rise_are_not_ornaments_or_errors():
    hop = 0.005
    t = np.arange(int(0.25 / hop)) * hop
    arch = 64.2 + 0.35 * np.sin(np.pi * t / t[-1]) - 0.2  # a short note that only holds an arch
    t2 = np.arange(int(0.6 / hop)) * hop
    rise = 67.0 - 0.4 * np.clip(1 - t2 / 0.08, 0, 1) ** 2  # the natural rising start (40 cents, 80 ms)
    gap = np.full(40, np.nan)
    track = _curve_track(np.r_[gap, arch, gap, rise, gap])
    notes = segment_notes(track)
    assert len(notes) == 2
    found = detect_ornaments(track, notes)
    assert not [o for o in found if o.type in ("slide_in", "grace", "vibrato", "trill", "mordent")], found
    assert abs(notes[1].midi - 67.0) < 0.05


def test_ornament_frames_and_roundtrip():
    orns = [Ornament("vibrato", 0.1, 0.5, 0, {"rate_hz": 6.0, "extent_cents": 100.0}),
            Ornament("grace", 0.0, 0.08, 0, {"duration_ms": 80.0, "interval_cents": 200.0, "main_note": 0})]
    codes = ornament_frames(orns, n_frames=100, hop_s=0.01)
    assert codes[5] == ORNAMENT_CODES["grace"] and codes[30] == ORNAMENT_CODES["vibrato"] and codes[70] == 0
    assert [Ornament.from_dict(o.to_dict()).to_dict() for o in orns] == [o.to_dict() for o in orns]
    assert isinstance(DspOrnamentDetector(), OrnamentDetector)


def test_custom_detector_is_used():
    class Nothing:
        name = "nothing"

        def detect(self, track, notes):
            return []

    track = _curve_track(np.full(100, 60.0))
    assert detect_ornaments(track, [Note(0.0, 0.5, 60.0)], detector=Nothing()) == []


def _coverage(path, kinds) -> float:
    from melisma.analysis.pitch import track_pitch
    from melisma.audio_io import load_audio

    y, sr = load_audio(path, sr=16000, mono=True)
    track = track_pitch(y, sr=sr)
    found = detect_ornaments(track, segment_notes(track))
    codes = ornament_frames(found, n_frames=len(track.hz), hop_s=track.hop_s)
    voiced = track.hz > 0
    return float(np.isin(codes[voiced], [ORNAMENT_CODES[k] for k in kinds]).mean())


@pytest.mark.shared_data
@pytest.mark.parametrize("pair,kinds", [
    (("fr05_Control", "fr05_Vibrato"), ("vibrato",)),
    (("zh05_Control", "zh05_Vibrato"), ("vibrato",)),
    (("ge02_Control", "ge02_Glissando"), ("slide_in", "slide_out", "portamento")),
    (("zh02_Control", "zh02_Glissando"), ("slide_in", "slide_out", "portamento")),
])
def test_gtsinger_technique_take_has_more_of_its_ornament(shared_data, pair, kinds):
    root = shared_data / "gtsinger_demo"
    control = _coverage(root / f"{pair[0]}.flac", kinds)
    technique = _coverage(root / f"{pair[1]}.flac", kinds)
    assert technique > control, (control, technique)


def test_match_spans_uses_each_found_span_once_and_needs_real_overlap():
    truth = [(0.0, 1.0), (0.2, 0.8), (2.0, 2.1)]
    # one found span overlapping both of the first two truth spans matches only one of them
    assert match_spans([(0.1, 0.9)], truth) == 1
    assert match_spans([(0.1, 0.9), (0.3, 0.7)], truth) == 2
    # 20 ms of overlap with a 100 ms truth span is under 30 % of the shorter span: no match
    assert match_spans([(2.08, 2.5)], truth) == 0
    assert match_spans([(2.05, 2.5)], truth) == 1
    assert match_spans([(2.08, 2.5)], truth, min_overlap=0.1) == 1
    assert match_spans([], truth) == 0 and match_spans([(0.0, 1.0)], []) == 0
