"""Every sentence the singer reads: errors, stage names, slider labels, signal strength, the plan summary.

Nothing here raises or prints a traceback: :func:`error_message` turns any exception into one
plain sentence, and :func:`plan_summary` reads a plan record (the JSON the box writes) into short
lines such as "Your take was 180 ms late; it is lined up with the backing now."

Examples
--------
>>> from melisma_companion.app import words
>>> words.slider_words("warmth")
('Warmer', 'Brighter')
>>> words.signal_words(-50)
'strong signal'
>>> words.size_words(1_536_000)
'1.5 MB'
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from typing import Any

from melisma import protocol as p
from melisma.errors import MelismaError

#: The sliders in screen order: (protocol name, title, word at -1, word at +1).
SLIDERS: tuple[tuple[str, str, str, str], ...] = (
    ("warmth", "Tone", "Warmer", "Brighter"),
    ("reverb", "Space", "Drier", "Wetter"),
    ("vocal_level", "Vocal", "Back", "Forward"),
    ("air", "Air", "Less air", "More air"),
    ("tuning", "Tuning", "Natural", "Tight"),
    ("ornaments", "Ornaments", "Keep", "Soften"),
)

#: Style presets as the singer knows them, in screen order.
STYLES: tuple[tuple[p.Style, str], ...] = (
    (p.Style.CPOP, "C-pop / KTV"),
    (p.Style.WESTERN, "UK pop"),
    (p.Style.BALLAD, "Ballad"),
    (p.Style.NEUTRAL, "Neutral"),
)

#: Ornament types (as the plan names them) -> what the legend calls them.
ORNAMENT_WORDS: dict[str, str] = {
    "vibrato": "vibrato",
    "slide_in": "slide 滑音",
    "slide_out": "slide 滑音",
    "portamento": "slide 滑音",
    "grace": "grace note 倚音",
    "trill": "trill",
    "mordent": "trill",
    "drift": "drift",
}

_STAGE_WORDS = {
    "decode": "reading the files",
    "align": "lining up the take",
    "cleanup": "cleaning noise and hum",
    "analyze_voice": "listening to your voice",
    "analyze_backing": "listening to the backing",
    "analyze_pitch": "finding notes and ornaments",
    "cache": "saving the analysis",
    "correct_pitch": "tuning the notes",
    "vocal_chain": "producing the vocal",
    "balance": "balancing with the backing",
    "master": "mastering",
    "write": "writing the mix",
    "done": "done",
}


class AppError(MelismaError):
    """Something the app itself cannot do (no take chosen, a file exists, ...); the message is for the singer."""

    exit_code = 10


def slider_words(name: str) -> tuple[str, str]:
    """The words at the two ends of slider ``name``."""
    for key, _title, low, high in SLIDERS:
        if key == name:
            return low, high
    raise KeyError(name)


def slider_value_text(value: float) -> str:
    """The box's own -1..+1 value as shown under a slider (e.g. ``+0.40``)."""
    return f"{value:+.2f}"


def style_words(style: p.Style) -> str:
    return dict(STYLES)[p.Style(style)]


def stage_words(stage: str) -> str:
    """A job stage from the box's status (engine stage names) in words."""
    if not stage:
        return "starting"
    return _STAGE_WORDS.get(stage, stage.replace("_", " "))


def signal_words(rssi: int) -> str:
    """Signal strength in words (RSSI in dBm)."""
    if rssi >= -60:
        return "strong signal"
    if rssi >= -75:
        return "good signal"
    if rssi >= -90:
        return "weak signal"
    return "very weak signal"


def size_words(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1e6:.1f} MB"
    if size >= 1000:
        return f"{size / 1e3:.0f} kB"
    return f"{size} B"


def time_words(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def version_message(box: tuple[int, int], app: tuple[int, int] = p.PROTOCOL_VERSION) -> str:
    """Which side to update when the protocol versions differ."""
    if box[0] > app[0]:
        return (f"This box is newer than the app (box protocol {box[0]}.{box[1]}, app {app[0]}.{app[1]}). "
                "Update the Melisma app, then try again.")
    return (f"This box's firmware is older than the app (box protocol {box[0]}.{box[1]}, app {app[0]}.{app[1]}). "
            "Update the box's firmware (copy the new bundle to it), then try again.")


def is_wrong_passkey(exc: BaseException) -> bool:
    """True when pairing failed because the typed passkey did not match the box's."""
    text = str(exc).upper()
    return any(k in text for k in ("CONFIRM_VALUE", "PASSKEY_ENTRY_FAILED", "DHKEY_CHECK", "AUTHENTICATION_FAILED"))


def pairing_message(exc: BaseException) -> str:
    if is_wrong_passkey(exc):
        return "That passkey did not match the one on the box. Check the number on the box and try again."
    if "PAIRING_NOT_SUPPORTED" in str(exc).upper() or "UNSPECIFIED" in str(exc).upper():
        return ("The box is not in pairing mode. Press its pair button (or run `melisma-device pair`), "
                "then tap Pair again.")
    return "Pairing did not work. Press the box's pair button and tap Pair again."


def error_message(exc: BaseException) -> str:
    """One plain sentence for any failure (never a traceback)."""
    from ..client import BoxError, JobFailedError, LinkLostError, NotPairedError

    if isinstance(exc, AppError):
        return str(exc)
    if isinstance(exc, p.IncompatibleVersionError):
        m = re.search(r"protocol (\d+)\.(\d+), this app speaks (\d+)\.(\d+)", str(exc))
        if m:
            box = (int(m.group(1)), int(m.group(2)))
            return version_message(box, (int(m.group(3)), int(m.group(4))))
        return "This is not a Melisma box, or its firmware is too old to talk to this app. Update the box's firmware."
    if isinstance(exc, NotPairedError):
        return pairing_message(exc)
    if isinstance(exc, LinkLostError):
        return "Lost the connection to the box. Move closer and check it is switched on."
    if isinstance(exc, JobFailedError):
        if exc.code is p.ErrorCode.CANCELLED:
            return "Cancelled."
        return "The box could not make this mix. Try another take, or check that the take has singing in it."
    if isinstance(exc, BoxError):
        code = exc.code
        if code is p.ErrorCode.NO_SPACE:
            return "The box is full. Delete some old takes or mixes from its library."
        if code is p.ErrorCode.TOO_LARGE:
            return "That file is too big for the box. Use a compressed recording (m4a, mp3) under 128 MB."
        if code is p.ErrorCode.NOT_FOUND:
            return "The box does not have that file any more. Refresh the library and choose again."
        if code is p.ErrorCode.BAD_NAME:
            return "The box does not accept that file name. Rename the file (letters, digits, dots and dashes)."
        return "The box refused that request. Try again; if it keeps happening, restart the box."
    if isinstance(exc, asyncio.TimeoutError):
        return "The box took too long to answer. Try again."
    if isinstance(exc, FileNotFoundError):
        return f"Cannot find the file {getattr(exc, 'filename', '') or ''}. Choose it again."
    if isinstance(exc, PermissionError):
        return "The app is not allowed to read or write there. Choose another place."
    if isinstance(exc, MelismaError):
        return str(exc)
    return "Something went wrong. Try again; the log has the details."


# ----------------------------------------------------------------------------------------------
# The plan in plain words


def _cents(value: float) -> str:
    return f"{abs(value):.0f} cents"


def correction_strength(plan: dict[str, Any]) -> float:
    """How far note centres move toward their targets (the plan's setting, else the engine default 0.8)."""
    settings = plan.get("settings") or {}
    value = settings.get("correction")
    return 0.8 if value is None else float(value)


def plan_summary(plan: dict[str, Any], *, report: dict[str, Any] | None = None) -> list[str]:
    """The plan (or mix report) in a few short sentences: lateness, clean-up, key, notes, ornaments, loudness.

    The loudness is the written mix's own (its integrated LUFS and true peak as measured on the
    file) from ``report``, the render's report, or from ``plan`` when it is itself a mix report;
    without either, the target the mix was made for, said as a target.
    """
    lines: list[str] = []
    alignment = plan.get("alignment") or {}
    offset = alignment.get("offset_ms")
    if offset is not None:
        if abs(offset) < 5:
            lines.append("Your take was already in time with the backing.")
        else:
            lines.append(f"Your take was {abs(offset):.0f} ms {'late' if offset > 0 else 'early'}; "
                         "it is lined up with the backing now.")
    actions = (plan.get("cleanup") or {}).get("actions") or []
    cleaned = []
    for a in actions:
        kind = a.get("action")
        if kind == "bleed_removal":
            if a.get("detected"):
                cleaned.append("the backing your phone's speaker played into the mic")
        elif kind == "hum_notch":
            cleaned.append(f"mains hum at {a.get('fundamental_hz', 50):.0f} Hz")
        elif kind == "denoise":
            cleaned.append(f"background noise (down {a.get('reduction_db', 0):.0f} dB)")
        elif kind == "highpass":
            cleaned.append("low rumble")
        elif kind == "declip":
            cleaned.append("clipped peaks")
        elif kind == "gate":
            cleaned.append("noise between phrases")
    if cleaned:
        lines.append("Cleaned: " + ", ".join(cleaned) + ".")
    else:
        lines.append("Your take was clean; nothing needed removing.")
    pitch = plan.get("pitch") or {}
    key = (pitch.get("key") or {}).get("name") or (pitch.get("key") or {}).get("key")
    if key:
        source = (pitch.get("key") or {}).get("source", "")
        lines.append(f"Key: {key}" + (" (from the backing and your singing)." if "backing" in source else "."))
    notes = pitch.get("notes") or []
    if notes:
        strength = correction_strength(plan)
        moved = [n for n in notes if abs(n.get("cents_error") or 0.0) * strength >= 5.0]
        if moved:
            shifts = [abs(n["cents_error"]) * strength for n in moved]
            lines.append(f"{len(moved)} of {len(notes)} notes were moved toward the right pitch, "
                         f"by {_cents(sum(shifts) / len(shifts))} on average (at most {_cents(max(shifts))}).")
        else:
            lines.append(f"All {len(notes)} notes were already in tune; none was moved.")
    ornaments = pitch.get("ornaments") or []
    if ornaments:
        counts = Counter(ORNAMENT_WORDS.get(o.get("type", ""), o.get("type", "")) for o in ornaments)
        kept = ", ".join(f"{name} \u00d7{n}" for name, n in counts.most_common())
        lines.append(f"Kept as you sang them: {kept}.")
    lines += loudness_words(plan, report)
    return lines


def loudness_words(plan: dict[str, Any], report: dict[str, Any] | None = None) -> list[str]:
    """The loudness line: the written file's measured LUFS and true peak when a report has them,
    else the target loudness (named as the target).

    >>> loudness_words({}, {"loudness": {"integrated_lufs": -14.06, "true_peak_dbtp": -1.23, "target_lufs": -14.0}})
    ['Loudness of your mix: -14.1 LUFS, true peak -1.2 dBTP (target -14 LUFS), right for phone speakers and earbuds.']
    >>> loudness_words({"settings": {"target_lufs": -14.0}})
    ['Loudness target: -14 LUFS, right for phone speakers and earbuds.']
    """
    for source in (report, plan):
        loud = (source or {}).get("loudness") or {}
        lufs, peak = _finite(loud.get("integrated_lufs")), _finite(loud.get("true_peak_dbtp"))
        if lufs is not None:
            target = _finite(loud.get("target_lufs"))
            return [f"Loudness of your mix: {lufs:.1f} LUFS"
                    + (f", true peak {peak:.1f} dBTP" if peak is not None else "")
                    + (f" (target {target:.0f} LUFS)" if target is not None else "")
                    + ", right for phone speakers and earbuds."]
    target = _finite((plan.get("settings") or {}).get("target_lufs"))
    if target is not None:
        return [f"Loudness target: {target:.0f} LUFS, right for phone speakers and earbuds."]
    return []


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
