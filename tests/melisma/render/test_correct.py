"""Ornament-aware pitch correction: target curves, and real resynthesis re-tracked by YIN.

The take is the synthetic voice of tools/corpus/voice.py (exact f0, notes and ornaments), with
every note detuned by 25-40 cents; the output audio is re-tracked with an independent YIN
tracker (tools/bench_correction.py), so the assertions hold for what a listener would hear.
"""

from __future__ import annotations

import numpy as np
import pytest
from melisma.errors import ConfigError
from melisma.render.correct import CorrectionSettings, hard_tune, hz_to_midi, note_centre_curve, target_f0
from melisma.render.resynth import shift_pitch

from tools.bench_correction import (
    demo_take,
    note_centre_errors,
    shape_correlation,
    vibrato_stats,
    yin_track,
)

C_MAJOR = [0, 2, 4, 5, 7, 9, 11]


@pytest.fixture(scope="module")
def take():
    return demo_take(sr=24000, seed=1)


@pytest.fixture(scope="module")
def input_track(take):
    return yin_track(take.audio, sr=take.sr, hop_s=take.hop_s)[0][: take.f0_hz.size]


@pytest.fixture(scope="module")
def rendered(take):
    """policy -> (target f0, corrected audio, re-tracked f0)."""
    out = {}
    for policy in ("keep", "soften", "flatten"):
        tgt, _ = target_f0(take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments,
                           settings=CorrectionSettings(ornaments=policy))
        audio = shift_pitch(take.audio, sr=take.sr, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=tgt)
        out[policy] = (tgt, audio, yin_track(audio, sr=take.sr, hop_s=take.hop_s)[0][: take.f0_hz.size])
    hard = hard_tune(take.f0_hz, hop_s=take.hop_s, scale_pitch_classes=C_MAJOR)
    audio = shift_pitch(take.audio, sr=take.sr, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=hard)
    out["hard"] = (hard, audio, yin_track(audio, sr=take.sr, hop_s=take.hop_s)[0][: take.f0_hz.size])
    return out


def _ornament(take, kind):
    return next(o for o in take.ornaments if o["type"] == kind)


def _vibrato_span(take):
    orn = _ornament(take, "vibrato")
    return orn["start_s"] + orn["params"]["fade_in_ms"] / 1000.0, orn["end_s"] - 0.05


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"correction": 1.5}, "from 0"),
        ({"correction": -0.1}, "from 0"),
        ({"ornaments": "squash"}, "'keep', 'soften' or 'flatten'"),
        ({"ornaments": {"vibrato": "loud"}}, "'keep', 'soften' or 'flatten'"),
        ({"ornaments": {"wobble": "keep"}}, "valid types"),
        ({"max_shift_cents": -5}, "max_shift_cents"),
    ],
)
def test_settings_reject_bad_values_and_say_what_works(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        CorrectionSettings(**kwargs).validate()
    assert fragment in str(info.value)


def test_policy_per_type_with_slide_alias_and_explicit_override():
    scales = CorrectionSettings(
        ornaments={"slide": "flatten", "slide_out": "keep", "vibrato": "soften", "trill": 0.25}
    ).policy_scales()
    assert scales["slide_in"] == 0.0 and scales["portamento"] == 0.0
    assert scales["slide_out"] == 1.0
    assert scales["vibrato"] == 0.5 and scales["trill"] == 0.25
    assert scales["grace"] == 1.0  # not named: kept


# --- target curves -------------------------------------------------------------------------------


def test_keep_moves_every_frame_of_a_note_rigidly_and_leaves_unvoiced_alone(take):
    tgt, report = target_f0(take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments)
    voiced = take.f0_hz > 0
    assert np.all(tgt[~voiced] == 0) and np.all(tgt[voiced] > 0)
    shift = 12 * np.log2(tgt[voiced] / take.f0_hz[voiced])
    times = np.flatnonzero(voiced) * take.hop_s
    for note, rep in zip(take.notes, report, strict=False):
        assert rep["shift_cents"] == pytest.approx(100 * (note["target_midi"] - note["midi"]), abs=0.01)
        inner = (times >= note["start_s"] + 0.05) & (times < note["end_s"] - 0.05)
        # the shift is one constant per note (ornaments ride along), except across a portamento
        porta = [o for o in take.ornaments if o["type"] == "portamento"]
        for o in porta:
            inner &= ~((times >= o["start_s"]) & (times < o["end_s"]))
        assert np.ptp(shift[inner]) < 1e-9
        assert 100 * shift[inner][0] == pytest.approx(rep["shift_cents"], abs=0.01)


def test_portamento_glides_between_the_two_corrected_notes(take):
    tgt, _ = target_f0(take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments)
    orn = _ornament(take, "portamento")
    a, b = int(np.ceil(orn["start_s"] / take.hop_s)), int(np.ceil(orn["end_s"] / take.hop_s))
    shift = 1200 * np.log2(tgt[a - 1 : b + 1] / take.f0_hz[a - 1 : b + 1])
    first, second = take.notes[orn["note"]], take.notes[orn["note"] + 1]
    assert shift[0] == pytest.approx(100 * (first["target_midi"] - first["midi"]), abs=0.5)
    assert shift[-1] == pytest.approx(100 * (second["target_midi"] - second["midi"]), abs=0.5)
    assert np.max(np.abs(np.diff(shift))) < 5.0  # a glide, no jump


def test_correction_zero_is_bit_exact_curve_and_audio(take):
    tgt, report = target_f0(
        take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments, settings=CorrectionSettings(correction=0.0)
    )
    assert np.array_equal(tgt, take.f0_hz)
    assert all(r["shift_cents"] == 0 for r in report)
    audio = shift_pitch(take.audio, sr=take.sr, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=tgt)
    assert np.array_equal(audio, take.audio)


def test_partial_correction_moves_half_way(take):
    tgt, _report = target_f0(
        take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments, settings=CorrectionSettings(correction=0.5)
    )
    errs = note_centre_errors(tgt, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments)
    before = np.array([100 * (n["midi"] - n["target_midi"]) for n in take.notes])
    assert np.allclose(errs, before / 2, atol=4.0)


def test_max_shift_clips_and_target_none_leaves_the_note():
    hop = 0.01
    f0 = np.full(200, 440.0)
    notes = [
        {"start_s": 0.0, "end_s": 1.0, "midi": 69.0, "target_midi": 74},
        {"start_s": 1.0, "end_s": 2.0, "midi": 69.0, "target_midi": None},
    ]
    tgt, report = target_f0(f0, hop_s=hop, notes=notes, ornaments=[], settings=CorrectionSettings(max_shift_cents=150))
    assert report[0]["shift_cents"] == 150 and report[0]["clipped"]
    assert report[1]["shift_cents"] == 0 and not report[1]["clipped"]
    assert 1200 * np.log2(tgt[50] / 440) == pytest.approx(150)
    assert np.array_equal(tgt[130:], f0[130:])  # bit-exact once past the ramp between notes


def test_centre_curve_ignores_vibrato_and_holds_across_a_slide(take):
    centre = note_centre_curve(take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments)
    a, b = _vibrato_span(take)
    span = slice(int(a / take.hop_s), int(b / take.hop_s))
    assert np.nanstd(centre[span]) * 100 < 6  # the 100-cent swing is not in the centre
    assert np.nanmedian(centre[span]) == pytest.approx(take.notes[0]["midi"], abs=0.05)
    slide = _ornament(take, "slide_in")
    s = slice(int(np.ceil(slide["start_s"] / take.hop_s)), int(slide["end_s"] / take.hop_s))
    assert np.nanmax(np.abs(centre[s] - take.notes[1]["midi"])) < 0.1  # held, not following the scoop


def test_hard_tune_curve_has_no_vibrato(take):
    hard = hard_tune(take.f0_hz, hop_s=take.hop_s, scale_pitch_classes=C_MAJOR)
    a, b = _vibrato_span(take)
    extent_in, _ = vibrato_stats(take.f0_hz, hop_s=take.hop_s, start_s=a, end_s=b)
    extent_hard, _ = vibrato_stats(hard, hop_s=take.hop_s, start_s=a, end_s=b)
    assert extent_in > 80 and extent_hard < 5
    with pytest.raises(ConfigError):
        hard_tune(take.f0_hz, hop_s=take.hop_s, scale_pitch_classes=[])


# --- re-tracked audio ----------------------------------------------------------------------------


def test_note_centres_land_on_target_after_resynthesis(take, input_track, rendered):
    before = note_centre_errors(input_track, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments)
    after = note_centre_errors(rendered["keep"][2], hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments)
    assert np.median(np.abs(before)) > 20
    assert np.median(np.abs(after)) < 5
    assert np.max(np.abs(after)) < 10


def test_vibrato_keeps_extent_and_rate(take, input_track, rendered):
    a, b = _vibrato_span(take)
    extent_in, rate_in = vibrato_stats(input_track, hop_s=take.hop_s, start_s=a, end_s=b)
    extent_out, rate_out = vibrato_stats(rendered["keep"][2], hop_s=take.hop_s, start_s=a, end_s=b)
    assert extent_in > 80
    assert extent_out == pytest.approx(extent_in, rel=0.10)
    assert abs(rate_out - rate_in) <= 0.3


def test_policies_soften_halves_and_flatten_removes_vibrato_hard_tune_loses_it(take, input_track, rendered):
    a, b = _vibrato_span(take)
    extent_in, _ = vibrato_stats(input_track, hop_s=take.hop_s, start_s=a, end_s=b)
    soft, _ = vibrato_stats(rendered["soften"][2], hop_s=take.hop_s, start_s=a, end_s=b)
    flat, _ = vibrato_stats(rendered["flatten"][2], hop_s=take.hop_s, start_s=a, end_s=b)
    hard, _ = vibrato_stats(rendered["hard"][2], hop_s=take.hop_s, start_s=a, end_s=b)
    assert 0.4 < soft / extent_in < 0.6
    assert flat / extent_in < 0.1
    assert hard / extent_in < 0.1


@pytest.mark.parametrize("kind", ["slide_in", "slide_out", "portamento"])
def test_slides_keep_their_shape(take, input_track, rendered, kind):
    orn = _ornament(take, kind)
    corr, rms_cents = shape_correlation(
        input_track, rendered["keep"][2], hop_s=take.hop_s, start_s=orn["start_s"], end_s=orn["end_s"]
    )
    assert corr >= 0.95
    if kind != "portamento":  # a portamento's shift glides, so its offset is not constant
        assert rms_cents < 10


def test_flattened_slide_loses_its_shape(take, input_track, rendered):
    orn = _ornament(take, "slide_in")
    start = orn["start_s"] + 0.03  # after the tracker's onset frames
    _, rms_keep = shape_correlation(input_track, rendered["keep"][2], hop_s=take.hop_s, start_s=start, end_s=orn["end_s"])
    _, rms_flat = shape_correlation(input_track, rendered["flatten"][2], hop_s=take.hop_s, start_s=start, end_s=orn["end_s"])
    assert rms_flat > 5 * rms_keep


def test_grace_note_stays_on_its_own_pitch(take, rendered):
    orn = _ornament(take, "grace")
    note = take.notes[orn["note"]]
    _tgt, _, track = rendered["keep"]
    frames = np.arange(int(np.ceil((orn["start_s"] + 0.02) / take.hop_s)), int((orn["end_s"] - 0.035) / take.hop_s))
    grace_pitch = np.median(hz_to_midi(track[frames]))
    expected = note["target_midi"] + orn["params"]["interval_cents"] / 100.0  # interval kept over the corrected note
    assert grace_pitch == pytest.approx(expected, abs=0.15)
    assert abs(grace_pitch - note["target_midi"]) > 1.5  # still a separate event, not pulled into the note


@pytest.mark.parametrize(
    "notes, ornaments",
    [
        ([{"start_s": 0.0, "end_s": 1.0}], []),  # no midi
        ([{"start_s": 1.0, "end_s": 0.5, "midi": 60.0}], []),  # ends before it starts
        ([{"start_s": 0.0, "end_s": 1.0, "midi": 60.0, "target_midi": float("nan")}], []),
        ([], [{"type": "vibrato", "start_s": "soon", "end_s": 1.0}]),
    ],
)
def test_malformed_plan_items_raise_plan_error(notes, ornaments):
    from melisma.errors import PlanError

    with pytest.raises(PlanError):
        target_f0(np.full(100, 220.0), hop_s=0.01, notes=notes, ornaments=ornaments)


def test_notes_shorter_than_the_centre_window_are_handled():
    # a 0.1 s note is shorter than the 0.2 s centre window (regression: broadcast error)
    hop = 0.005
    f0 = np.full(20, 220.0)
    out, _corrections = target_f0(
        f0,
        hop_s=hop,
        notes=[{"start_s": 0.0, "end_s": 0.1, "midi": 57.2, "target_midi": 57}],
        settings=CorrectionSettings(correction=1.0, ornaments={"vibrato": "flatten"}),
    )
    assert out.shape == f0.shape and np.all(np.isfinite(out))
