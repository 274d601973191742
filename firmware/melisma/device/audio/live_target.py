"""Where the live corrector pulls note centres: a key, a reference melody, or what the box knows.

In order (:func:`resolve_target`):

1. a key the user named (``--key "D major"``; ``chromatic``: the nearest semitone);
2. a reference melody (``--melody PATH.mid``), followed along the backing's playhead, with the
   key (named or found) where the melody is silent;
3. a plan the box analyzed for this backing (its ``inputs.backing.sha256`` matches): its key and
   tuning, and, when that plan was made against a reference melody, its notes' targets;
4. the key estimated from the backing's audio;
5. with nothing at all: chromatic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import AudioDeviceError, MelismaError
from .live_correct import LiveTarget

logger = logging.getLogger("melisma.device.audio")

#: ``--key`` values that mean "every semitone".
CHROMATIC = ("chromatic", "chroma", "12")


def _scale(key: str):
    from ...analysis.key import parse_key

    try:
        return parse_key(key)
    except MelismaError as exc:
        raise AudioDeviceError(f"--key {key!r}: {exc}; or 'chromatic' (the nearest semitone), 'auto'") from None


def plan_target(plan: dict[str, Any]) -> LiveTarget | None:
    """The target a plan holds: its key, tuning and, for a melody-targeted plan, its notes' targets."""
    from ...analysis.key import Scale

    pitch = plan.get("pitch") or {}
    key = pitch.get("key") or {}
    try:
        scale = Scale.from_dict(key["scale"]) if isinstance(key.get("scale"), dict) else None
    except MelismaError:
        scale = None
    if scale is None:
        return None
    melody: list[tuple[float, float, float]] = []
    if pitch.get("target") == "melody":
        for n in pitch.get("notes") or []:
            if n.get("target_midi") is not None:
                melody.append((float(n["start_s"]), float(n["end_s"]), float(n["target_midi"])))
    return LiveTarget(scale=scale, melody=melody, tuning_cents=float(key.get("tuning_cents") or 0.0))


def plan_for_backing(plans_dir: str | Path, backing: str | Path) -> dict[str, Any] | None:
    """The newest plan in ``plans_dir`` made with ``backing`` (same sha256), or ``None``."""
    from ...audio_io import file_sha256

    folder = Path(plans_dir)
    if not folder.is_dir():
        return None
    digest = file_sha256(backing)
    best: tuple[int, dict[str, Any]] | None = None
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            sha = ((record.get("inputs") or {}).get("backing") or {}).get("sha256")
            mtime = path.stat().st_mtime_ns
        except (OSError, ValueError, AttributeError):
            continue
        if sha == digest and (best is None or mtime > best[0]):
            best = (mtime, record)
    return best[1] if best else None


def resolve_target(*, key: str | None = None, melody: str | Path | None = None, backing_audio: np.ndarray | None = None,
                   sample_rate: int = 48000, backing_path: str | Path | None = None,
                   plans_dir: str | Path | None = None) -> tuple[LiveTarget, str]:
    """The live target and where it came from (``"key"``, ``"melody"``, ``"plan"``, ``"backing"``, ``"chromatic"``)."""
    scale = None
    source = ""
    if key is not None and key.strip().lower() not in ("", "auto"):
        if key.strip().lower() in CHROMATIC:
            return LiveTarget(scale=None), "chromatic"
        scale, source = _scale(key), "key"
    if scale is None and backing_path is not None and plans_dir is not None:
        try:
            plan = plan_for_backing(plans_dir, backing_path)
        except OSError:
            plan = None
        target = plan_target(plan) if plan is not None else None
        if target is not None and melody is None:
            return target, "plan"
        if target is not None:
            scale, source = target.scale, "plan"
    if scale is None and backing_audio is not None and backing_audio.size:
        from ...analysis.key import estimate_key

        try:
            scale, source = estimate_key(backing_audio, sr=sample_rate).scale, "backing"
        except MelismaError as exc:
            logger.warning("live correction: no key from the backing (%s); correcting to semitones", exc)
    if melody is not None:
        from ...analysis.melody import load_melody

        try:
            notes = load_melody(melody)
        except MelismaError as exc:
            raise AudioDeviceError(f"--melody {str(melody)!r}: {exc}") from None
        return LiveTarget(scale=scale, melody=[(n.start_s, n.end_s, float(n.midi)) for n in notes]), "melody"
    if scale is None:
        return LiveTarget(scale=None), "chromatic"
    return LiveTarget(scale=scale), source
