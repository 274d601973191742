"""Ornament-aware pitch correction, as the plan sees it: analyse once, correct at render.

:func:`analyze_pitch` produces the plan's ``pitch`` section (f0 track, notes with targets,
ornaments, key) from the cleaned vocal; :func:`correct_vocal` moves each note's centre toward its
target while keeping (or softening) its ornaments, and resynthesises the voice.

The semantic sliders ``tuning`` (−1 natural … +1 tight) and ``ornaments`` (−1 keep … +1 soften)
map to the correction settings as follows (explicit ``--correction`` / ``--ornaments`` win):

==========  =====================================================================
tuning      correction = 0.8 + 0.2·t for t ≥ 0, 0.8·(1 + t) for t < 0
            (−1 leaves pitch untouched, 0 removes 80 % of each note's error, +1 all)
ornaments   residual factor = 1 for s ≤ 0, 1 − 0.5·s for s > 0 (+1 = 'soften': half the
            vibrato swing and slide depth; 'flatten' only by asking for it explicitly)
==========  =====================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ConfigError

DEFAULT_CORRECTION = 0.8
#: Smallest backing detuning acted on, in cents (below it the A440 grid is as good).
TUNING_MIN_CENTS = 5.0
#: Decimals kept in the plan's JSON f0 arrays (Hz to 0.01, confidence to 0.001): small files, no loss that matters.
F0_DECIMALS = 2


def correction_from_sliders(
    sliders: Mapping[str, float] | None,
    *,
    correction: float | None = None,
    ornaments: str | Mapping | None = None,
):
    """CorrectionSettings from the ``tuning``/``ornaments`` sliders, or explicit values."""
    from .render.correct import CorrectionSettings

    sliders = sliders or {}
    if correction is None:
        t = float(sliders.get("tuning", 0.0))
        correction = DEFAULT_CORRECTION + (1 - DEFAULT_CORRECTION) * t if t >= 0 else DEFAULT_CORRECTION * (1 + t)
    if ornaments is None:
        s = float(sliders.get("ornaments", 0.0))
        ornaments = "keep" if s <= 0 else round(1.0 - 0.5 * s, 4)
    return CorrectionSettings(correction=float(correction), ornaments=ornaments).validate()


def resolve_scale(key: str | None, scale: str | None):
    """A Scale from ``--key`` and ``--scale`` ('A' + 'minor', 'D' + 'zhi', or 'D zhi' alone)."""
    from .analysis.key import parse_key

    if key is None and scale is None:
        return None
    if key is None:
        raise ConfigError(f"--scale {scale} needs a tonic too: give --key, e.g. --key D --scale {scale}")
    text = f"{key} {scale}" if scale else key
    return parse_key(text)


#: Pitch trackers by name. The DSP tracker stays the engine's default: through the whole note and
#: ornament analysis (tuned on its 5 ms track; tools/eval_pitch_real.py) both give 0.942 note
#: accuracy on the real phone sight-singing set, and the DSP track lets the ornament classifier
#: order every GTSinger plain/technique pair while the model's track misses one (ge06 vibrato,
#: 0.34 -> 0.24). The int8 model is better on vocadito notes (0.915 vs 0.898 against annotator A1)
#: and on heavily degraded generated takes. See models/pitch/MODEL_CARD.md.
#: ``MELISMA_PITCH_TRACKER=model`` or ``--tracker model`` picks it.
PITCH_TRACKERS = ("dsp", "model")


def pitch_tracker_named(name: str | None):
    """A pitch tracker by name ('dsp' or 'model'); None reads $MELISMA_PITCH_TRACKER, default 'dsp'."""
    from .analysis.pitch import DspPitchTracker

    name = name or os.environ.get("MELISMA_PITCH_TRACKER", "dsp")
    if name == "dsp":
        return DspPitchTracker()
    if name == "model":
        from .analysis.pitch_model import TflitePitchTracker

        return TflitePitchTracker()
    raise ConfigError(f"pitch tracker {name!r} is unknown; use one of {', '.join(PITCH_TRACKERS)}")


def default_ornament_detector():
    """The int8 TFLite ornament classifier when a TFLite runtime and its model are available
    (it beats the DSP rules on held-out generated phrases and on the real plain-vs-ornamented
    pairs, see models/ornaments/MODEL_CARD.md), else the DSP detector.
    """
    from .analysis.ornaments import DspOrnamentDetector
    from .errors import ModelError

    try:
        from .analysis.ornament_model import TfliteOrnamentDetector

        return TfliteOrnamentDetector()
    except (ModelError, ImportError, OSError):
        return DspOrnamentDetector()


def analyze_pitch(
    vocal: np.ndarray,
    *,
    sr: int,
    backing: np.ndarray | None = None,
    key: str | None = None,
    scale: str | None = None,
    melody_path: str | os.PathLike | None = None,
    tracker=None,
    detector=None,
) -> dict[str, Any]:
    """The plan's ``pitch`` section for a vocal (and optionally its backing).

    The target comes from, in order: the reference melody (``melody_path``), the user's key
    (``key``/``scale``), the key estimated from the backing, else the key estimated from the
    sung notes themselves.
    """
    from .analysis.key import estimate_key_combined, estimate_key_from_notes, estimate_tuning_cents
    from .analysis.melody import load_melody
    from .analysis.notes import assign_targets, segment_notes
    from .analysis.ornaments import detect_ornaments
    from .analysis.pitch import track_pitch

    user_scale = resolve_scale(key, scale)
    melody = load_melody(melody_path) if melody_path is not None else None
    track = track_pitch(vocal, sr=sr, tracker=tracker)
    notes = segment_notes(track)
    key_info: dict[str, Any]
    if user_scale is not None:
        target_scale = user_scale
        key_info = {"key": user_scale.name, "scale": user_scale.to_dict(), "confidence": 1.0, "source": "user", "candidates": []}
    else:
        if backing is not None:
            estimate = estimate_key_combined(backing, sr=sr, notes=notes)
            source = "backing+vocal"
        else:
            estimate = estimate_key_from_notes(notes)
            source = "vocal"
        target_scale = estimate.scale
        key_info = estimate.to_dict()
        key_info["source"] = source
    notes = assign_targets(notes, scale=target_scale, melody=melody)
    # A band tuned away from A440 moves every target with it, so the singer is corrected onto
    # the band rather than off it. Without a backing the 440 grid (or the melody) is the reference.
    tuning_cents = 0.0
    if backing is not None:
        measured = estimate_tuning_cents(backing, sr=sr)
        if np.isfinite(measured) and abs(measured) >= TUNING_MIN_CENTS:
            tuning_cents = round(measured, 1)
    if tuning_cents:
        for note in notes:
            if note.target_midi is not None:
                note.target_midi = float(note.target_midi) + tuning_cents / 100.0
                note.cents_error = round(100.0 * (note.midi - note.target_midi), 1)
    key_info["tuning_cents"] = tuning_cents
    if detector is None:
        detector = default_ornament_detector()
    ornaments = detect_ornaments(track, notes, detector=detector)
    f0 = track.to_dict()
    f0["hz"] = np.round(np.asarray(track.hz, dtype=np.float64), F0_DECIMALS).tolist()
    f0["confidence"] = np.round(np.asarray(track.confidence, dtype=np.float64), 3).tolist()
    return {
        "f0": f0,
        "notes": [n.to_dict() for n in notes],
        "ornaments": [o.to_dict() for o in ornaments],
        "key": {**key_info, "name": key_info.get("key")},
        "target": "melody"
        if melody is not None
        else ("key" if user_scale is not None else f"estimated key ({key_info['source']})"),
        "melody": str(melody_path) if melody_path is not None else None,
        "tracker": getattr(tracker, "name", None) or f0.get("tracker"),
        "detector": getattr(detector, "name", None) or type(detector).__name__,
    }


def correction_key(pitch: Mapping[str, Any], settings) -> str:
    """A short hash naming one correction result (for the plan's cache of corrected vocals)."""
    payload = {
        "notes": [(n["start_s"], n["end_s"], n.get("target_midi")) for n in pitch.get("notes", [])],
        "ornaments": len(pitch.get("ornaments", [])),
        "correction": settings.correction,
        "ornaments_policy": settings.ornaments,
        "max_shift_cents": settings.max_shift_cents,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan_correction(pitch: Mapping[str, Any], settings, *, method: str = "psola") -> tuple[np.ndarray, dict[str, Any]]:
    """The target f0 curve for the plan's notes and ornaments, and the report of what it does."""
    from .render.correct import target_f0

    f0 = pitch["f0"]
    hop_s = float(f0["hop_s"])
    hz = np.asarray(f0["hz"], dtype=np.float64)
    target, corrections = target_f0(hz, hop_s=hop_s, notes=pitch["notes"], ornaments=pitch["ornaments"], settings=settings)
    errors_after = [abs(c["cents_error_after"]) for c in corrections if c.get("cents_error_after") is not None]
    report = {
        "settings": {
            "correction": settings.correction,
            "ornaments": settings.ornaments,
            "max_shift_cents": settings.max_shift_cents,
            "method": method,
        },
        "corrections": corrections,
        "median_abs_cents_error_after": float(np.median(errors_after)) if errors_after else None,
        "target_f0": {"hop_s": hop_s, "hz": np.round(target, F0_DECIMALS).tolist()},
    }
    return target, report


def correct_vocal(
    vocal: np.ndarray,
    pitch: Mapping[str, Any],
    *,
    sr: int,
    settings,
    start_sample: int = 0,
    method: str = "psola",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Correct ``vocal`` (which starts ``start_sample`` into the take) along the plan's pitch.

    Returns the corrected vocal (same length) and the report of :func:`plan_correction`.
    """
    from .render.resynth import shift_pitch

    target, report = plan_correction(pitch, settings, method=method)
    f0 = pitch["f0"]
    hop_s = float(f0["hop_s"])
    hz = np.asarray(f0["hz"], dtype=np.float64)
    vocal = np.asarray(vocal, dtype=np.float32)
    if len(vocal) == 0 or np.array_equal(target, hz):
        return vocal, report
    # Frames covering this stretch of the take (a preview window starts part-way in).
    hop = hop_s * sr
    first = int(np.floor(start_sample / hop))
    last = int(np.ceil((start_sample + len(vocal)) / hop)) + 1
    seg_hz, seg_target = hz[first:last], target[first:last]
    if seg_hz.size < 2:
        return vocal, report
    # shift_pitch puts frame 0 at sample 0: pad the front so frame `first` lands on its sample.
    lead = int(round(start_sample - first * hop))
    padded = np.concatenate([np.zeros(lead, np.float32), vocal]) if lead > 0 else vocal
    out = shift_pitch(padded, sr=sr, f0_hz=seg_hz, hop_s=hop_s, target_f0_hz=seg_target, method=method)
    return out[lead:].astype(np.float32, copy=False), report
