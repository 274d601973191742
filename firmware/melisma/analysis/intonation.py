"""The plan's ``pitch`` section: f0 track, notes with their targets, ornaments, key and tuning.

:func:`analyze_pitch` runs once per take (from the cleaned vocal, and the backing when there is
one); the render's pitch-correction stage (:mod:`melisma.render.pitch`) reads what it found.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Pitch trackers by name. The DSP tracker stays the engine's default: through the whole note and
#: ornament analysis (tuned on its 5 ms track; tools/eval_pitch_real.py) both give 0.942 note
#: accuracy on the real phone sight-singing set, and the DSP track lets the ornament classifier
#: order every GTSinger plain/technique pair while the model's track misses one (ge06 vibrato,
#: 0.34 -> 0.24). The int8 model is better on vocadito notes (0.915 vs 0.898 against annotator A1)
#: and on heavily degraded generated takes. See models/pitch/MODEL_CARD.md.
#: ``MELISMA_PITCH_TRACKER=model`` or ``--tracker model`` picks it.
PITCH_TRACKERS = ("dsp", "model")


#: Smallest backing detuning acted on, in cents (below it the A440 grid is as good).
TUNING_MIN_CENTS = 5.0


#: Decimals kept in the plan's JSON f0 arrays (Hz to 0.01, confidence to 0.001): small files, no loss that matters.
F0_DECIMALS = 2


def resolve_scale(key: str | None, scale: str | None):
    """A Scale from ``--key`` and ``--scale`` ('A' + 'minor', 'D' + 'zhi', or 'D zhi' alone)."""
    from .key import parse_key

    if key is None and scale is None:
        return None
    if key is None:
        raise ConfigError(f"--scale {scale} needs a tonic too: give --key, e.g. --key D --scale {scale}")
    text = f"{key} {scale}" if scale else key
    return parse_key(text)


def pitch_tracker_named(name: str | None):
    """A pitch tracker by name ('dsp' or 'model'); None reads $MELISMA_PITCH_TRACKER, default 'dsp'."""
    from .pitch import DspPitchTracker

    name = name or os.environ.get("MELISMA_PITCH_TRACKER", "dsp")
    if name == "dsp":
        return DspPitchTracker()
    if name == "model":
        from .pitch_model import TflitePitchTracker

        return TflitePitchTracker()
    raise ConfigError(f"pitch tracker {name!r} is unknown; use one of {', '.join(PITCH_TRACKERS)}")


def default_ornament_detector():
    """The int8 TFLite ornament classifier when a TFLite runtime and its model are available
    (it beats the DSP rules on held-out generated phrases and on the real plain-vs-ornamented
    pairs, see models/ornaments/MODEL_CARD.md), else the DSP detector.
    """
    from ..errors import ModelError
    from .ornaments import DspOrnamentDetector

    try:
        from .ornament_model import TfliteOrnamentDetector

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
    from .key import estimate_key_combined, estimate_key_from_notes, estimate_tuning_cents
    from .melody import load_melody
    from .notes import assign_targets, segment_notes
    from .ornaments import detect_ornaments
    from .pitch import track_pitch

    user_scale = resolve_scale(key, scale)
    melody = load_melody(melody_path) if melody_path is not None else None
    track = track_pitch(vocal, sr=sr, tracker=tracker)
    notes = segment_notes(track, audio=vocal, sr=sr)
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
    if melody:
        # the melody aligned to the sung pitch cuts the notes it spans and gives each its own target
        from .melody_align import align_melody

        notes = align_melody(track, notes, melody, scale=target_scale, key_confidence=float(key_info.get("confidence", 1.0)))
    else:
        notes = assign_targets(notes, scale=target_scale, key_confidence=float(key_info.get("confidence", 1.0)), track=track)
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
