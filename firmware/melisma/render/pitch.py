"""Ornament-aware pitch correction as a render stage over the plan: analyzed once, corrected at render.

:func:`~melisma.analysis.intonation.analyze_pitch` produced the plan's ``pitch`` section (f0
track, notes with targets, ornaments, key) from the cleaned vocal; :func:`correct_vocal` moves
each note's centre toward its target while keeping (or softening) its ornaments, and resynthesises
the voice. The pipeline renders correct → chain → balance → master, and this is the first stage.

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
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..analysis.intonation import F0_DECIMALS

DEFAULT_CORRECTION = 0.8


def correction_from_sliders(
    sliders: Mapping[str, float] | None,
    *,
    correction: float | None = None,
    ornaments: str | Mapping | float | None = None,
) -> Any:
    """CorrectionSettings from the ``tuning``/``ornaments`` sliders, or explicit values."""
    from .correct import CorrectionSettings

    sliders = sliders or {}
    if correction is None:
        t = float(sliders.get("tuning", 0.0))
        correction = DEFAULT_CORRECTION + (1 - DEFAULT_CORRECTION) * t if t >= 0 else DEFAULT_CORRECTION * (1 + t)
    if ornaments is None:
        s = float(sliders.get("ornaments", 0.0))
        ornaments = "keep" if s <= 0 else round(1.0 - 0.5 * s, 4)
    policy: Any = dict(ornaments) if isinstance(ornaments, Mapping) else ornaments
    return CorrectionSettings(correction=float(correction), ornaments=policy).validate()


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
    from .correct import target_f0

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
    in_place: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Correct ``vocal`` (which starts ``start_sample`` into the take) along the plan's pitch.

    Returns the corrected vocal (same length) and the report of :func:`plan_correction`. With
    ``in_place`` the corrected samples are written into ``vocal`` (a float32 array the caller
    owns and no longer needs), so a whole take is not held twice.
    """
    from .resynth import shift_pitch

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
    out = shift_pitch(padded, sr=sr, f0_hz=seg_hz, hop_s=hop_s, target_f0_hz=seg_target, method=method,
                      in_place=in_place or padded is not vocal)
    return out[lead:].astype(np.float32, copy=False), report
